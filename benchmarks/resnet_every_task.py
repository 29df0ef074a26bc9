"""A torchvision ResNet-50 through dc-convert and every transfer task, end to end.

1. Builds a randomly initialised torchvision ``resnet50`` (seed 0, ``weights=None``) and saves its
   state dict behind each prefix real releases use: ``module.``, ``module.encoder_q.``,
   ``backbone.``, ``model.``.
2. Converts each with ``dc-convert --from torchvision-resnet50 --input-size 64`` and checks that
   the four checkpoints hold the same weights (sha256) and that each one's res5 output and pooled
   descriptor are bit-identical (``torch.equal``) to torchvision's own forward on a test batch.
3. Runs every ``dc-transfer`` task on each checkpoint at smoke scale on the embedded data, as
   commands, with the budgets below (smaller than the smoke defaults for the fine-tuning tasks,
   to fit a shared 2-core CPU), and records exit code, metrics and wall time. ``mlp`` must refuse
   (exit 2: a ResNet has no fc6/fc7). The same weights must give the same metrics whatever the
   prefix was (fixed seeds, 0 workers, CPU).

    python benchmarks/resnet_every_task.py            # -> benchmarks/out/resnet_every_task.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

PREFIXES = ("module.", "module.encoder_q.", "backbone.", "model.")
# task, extra flags (smoke scale; the fine-tuning tasks on smaller budgets than their smoke defaults)
TASKS = (
    ("linear-imagenet", []),
    ("linear-places", []),
    ("knn-graph", []),
    ("lowshot", ["--iterations", "4", "--draws", "2"]),
    ("voc-classification", ["--layers", "res5", "--iterations", "20"]),
    ("voc-classification", ["--layers", "all", "--iterations", "10"]),
    ("voc-detection", ["--iterations", "4"]),
    ("voc-segmentation", ["--iterations", "20"]),
    ("mlp", []),
)
BIN = Path(sys.executable).parent


def torchvision_features(tv, x):
    got = {}
    hooks = [tv.layer4.register_forward_hook(lambda _m, _i, o: got.__setitem__("res5", o)),
             tv.avgpool.register_forward_hook(lambda _m, _i, o: got.__setitem__("gap", o))]
    with torch.no_grad():
        tv(x)
    for h in hooks:
        h.remove()
    return got["res5"], torch.flatten(got["gap"], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=None, help="default: a temporary folder, removed")
    ap.add_argument("--out", default="benchmarks/out/resnet_every_task.json")
    args = ap.parse_args()

    from dcbench.checkpoint import load_checkpoint
    from dcbench.provenance import environment, git_sha, utc_now

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dcbench-r50-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DCBENCH_CACHE": str(work / "features")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tv = torchvision.models.resnet50(weights=None).eval()
    trunk = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    res5, gap = torchvision_features(tv, x)
    report: dict = {"benchmark": "resnet_every_task", "prefixes": {}, "tasks": [list(t) for t in TASKS]}
    t_all = time.perf_counter()
    for prefix in PREFIXES:
        slug = prefix.strip(".").replace(".", "-")
        src = work / f"resnet50-{slug}.pth"
        torch.save({prefix + k: v for k, v in trunk.items()}, src)
        ckpt = work / f"r50-{slug}"
        conv = subprocess.run([str(BIN / "dc-convert"), "--from", "torchvision-resnet50", str(src), "--out",
                               str(ckpt), "--input-size", "64", "--quiet"], capture_output=True, text=True, env=env)
        entry = {"convert_rc": conv.returncode, "convert_summary": conv.stdout.strip().splitlines()[-1:]}
        ck = load_checkpoint(ckpt)
        with torch.no_grad():
            entry["res5_bit_identical"] = bool(torch.equal(ck.model.eval().trunk(x), res5))
            entry["descriptor_bit_identical"] = bool(torch.equal(ck.model.penultimate(x), gap))
        entry["sha256"] = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
        entry["format_version"] = ck.meta["format_version"]
        runs = []
        for task, extra in TASKS:
            out = work / "results" / slug
            t = time.perf_counter()
            p = subprocess.run([str(BIN / "dc-transfer"), task, "--checkpoint", str(ckpt), "--out", str(out),
                                "--workers", "0", "--device", "cpu", *extra], capture_output=True, text=True, env=env)
            run = {"task": task, "flags": extra, "rc": p.returncode, "wall_s": round(time.perf_counter() - t, 1)}
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("result: ")]
            if lines:
                result = json.loads(Path(lines[-1][len("result: "):]).read_text())
                run["metrics"] = {k: round(v, 3) for k, v in result["metrics"].items()}
                run["variant"] = result["variant"]
            else:
                run["stderr"] = p.stderr.strip().splitlines()[-1:]
            print(f"{prefix:18s} {task:20s} {' '.join(extra):28s} rc={p.returncode} {run['wall_s']:6.1f}s "
                  f"{run.get('metrics', run.get('stderr'))}", flush=True)
            runs.append(run)
        entry["runs"] = runs
        report["prefixes"][prefix] = entry
    entries = list(report["prefixes"].values())
    report["checks"] = {
        "all_converted": all(e["convert_rc"] == 0 for e in entries),
        "same_weights": len({e["sha256"] for e in entries}) == 1,
        "bit_identical_to_torchvision": all(e["res5_bit_identical"] and e["descriptor_bit_identical"] for e in entries),
        "every_task_ran": all(r["rc"] == 0 for e in entries for r in e["runs"] if r["task"] != "mlp"),
        "mlp_refused_exit_2": all(r["rc"] == 2 for e in entries for r in e["runs"] if r["task"] == "mlp"),
        "same_metrics_for_every_prefix": len({json.dumps([r.get("metrics") for r in e["runs"]]) for e in entries}) == 1,
    }
    report.update(total_s=round(time.perf_counter() - t_all, 1), git_sha=git_sha(), environment=environment(),
                  created=utc_now(), machine="shared 2-core CPU, no GPU; smoke scale on the embedded data")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["checks"], indent=2))
    print(f"wrote {out} ({report['total_s']} s)")
    if not args.workdir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
