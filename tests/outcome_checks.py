"""What every task's end-to-end test checks of a result's intervals and its per-image outcomes (a module,
so the test files import the same one)."""

from __future__ import annotations

from pathlib import Path

from dcbench.outcomes import bootstrap, percentile_interval, read_outcomes


def check_intervals(path: Path, result: dict, names, *, contains: bool = True, spread: bool = True) -> dict:
    """``names`` are exactly the metrics with an interval; the outcomes file beside ``path`` reads back
    (:func:`read_outcomes` checks it reproduces each metric) and its bootstrap gives the recorded
    interval, a real spread (``spread``; an untrained smoke detector may find nothing, whose mAP is 0 on
    every resample). ``contains``: the interval holds the metric's own value too -- not
    guaranteed for AP on a few positives, whose resamples (a positive drawn twice ranks twice) are
    biased upwards, so such a result can have its value below the interval. Returns the outcomes."""
    metrics = read_outcomes(result, path)
    ci = result["intervals"]["metrics"]
    assert set(metrics) == set(ci) == set(names)
    assert result["intervals"]["images"] == result["outcomes"]["images"]
    for n in names:
        lo, hi = ci[n]
        assert lo < hi if spread else lo <= hi
        assert (lo, hi) == percentile_interval(bootstrap(metrics[n]))
        if contains:
            assert lo <= result["metrics"][n] <= hi
    return metrics
