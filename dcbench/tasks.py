"""The transfer-task registry: the one list of ``dc-transfer`` tasks.

Contract of a task named here (``tests/test_task_registry.py`` checks every point for every
task, so a task missing from any of the four places fails the test suite, never silently):

1. its module (value below) defines ``DESCRIPTION``, ``add_arguments(parser)`` or
   ``add_arguments(parser, task)``, and ``run(args) -> Path`` (the result file it wrote);
2. ``tox.ini`` has a test environment of the same name (``tox -e TASK``);
3. the result schema accepts it (:data:`dcbench.results.TASKS` is derived from this registry);
4. the leaderboard has a table with a column for it (``dcbench.leaderboard.tables``).

It lives in ``dcbench`` because the transfer CLI, the result schema and the leaderboard all need
it and may only share ``dcbench``; naming a module here costs no import (the CLI imports them).
"""

from __future__ import annotations

TASKS: dict[str, str] = {
    "mlp": "dcbench.transfer.mlp",
    "linear-imagenet": "dcbench.transfer.linear_probe",
    "linear-places": "dcbench.transfer.linear_probe",
    "voc-classification": "dcbench.transfer.voc_classification",
    "voc-detection": "dcbench.transfer.voc_detection",
    "voc-segmentation": "dcbench.transfer.voc_segmentation",
    "lowshot": "dcbench.transfer.lowshot",
    "knn-graph": "dcbench.transfer.knn_graph",
}

# The metric names each task may report (full-match patterns): the result schema refuses any
# other, so a metric name -- which becomes a table header -- is always one of these words.
_PROBED = r"(conv[1-5](_[1-9])?|res[2-5]|res5_gap)(_best)?"  # AlexNet/VGG16 convs, ResNet stages
METRIC_NAMES: dict[str, str] = {
    "mlp": r"top1(_best)?",
    "linear-imagenet": _PROBED,
    "linear-places": _PROBED,
    "voc-classification": r"map",
    "voc-detection": r"map",
    "voc-segmentation": r"miou|pixel_acc",
    "lowshot": r"(random_)?n[1-9][0-9]{0,5}_(mean|std)",
    "knn-graph": r"ratio_(intra|median|q1|q3|min|max)|random_graph_mean",
}

# Tasks defined on fc6/fc7 alone (the mlp task retrains AlexNet/VGG's fc6-fc8): a checkpoint of
# another family (ResNets) cannot run them, and dc-bench run leaves them out for it.
NEEDS_FC6_FC7 = frozenset({"mlp"})
