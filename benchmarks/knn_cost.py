"""Time and peak memory of dc-transfer knn's k-NN step (normalise the bank, chunked top-200 search,
votes for every k), on synthetic L2-normalised features, and its extrapolation to ImageNet.

    nice .venv/bin/python benchmarks/knn_cost.py --bank 100000 --queries 10000 --dim 2048

The features are what the feature cache hands the task: float16, bank x dim and queries x dim,
unit-length gaussian rows with random labels over --classes classes. Timed: ``knn.normalised``
(the bank), ``knn.nearest`` (similarity blocks + top-max(k), chunked) and ``knn.knn_accuracy``
(the votes for k in --k) -- the very functions the task calls.

Peak memory: resource.getrusage(RUSAGE_SELF).ru_maxrss (the process's resident high-water mark,
KiB on Linux) after the step minus before it. The synthetic features are made in slices first,
so the mark before the step is the inputs plus the interpreter, and the delta is what the step
adds on top (tracemalloc cannot see torch's allocations). It is compared with the memory model
in docs/transfer.md: bank x dim x bytes + chunk x bank x 4 (one float32 similarity block).

Extrapolation to the full protocol (1,281,167 bank, 50,000 queries): the search scales with
bank x queries (one dot product per pair), the votes with queries only; memory by the model.
Writes benchmarks/out/knn_cost.json (--out).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

FULL_BANK, FULL_QUERIES = 1_281_167, 50_000  # ImageNet train, val


def unit_rows(rng: np.random.Generator, n: int, dim: int, rows: int = 8192) -> np.ndarray:
    """n unit-length gaussian rows as float16, made ``rows`` at a time (no float32 copy of the whole)."""
    out = np.empty((n, dim), np.float16)
    for s in range(0, n, rows):
        x = rng.standard_normal((min(rows, n - s), dim), dtype=np.float32)
        out[s:s + rows] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def model_bytes(bank: int, dim: int, chunk: int, bank_bytes: int) -> int:
    """The memory model of docs/transfer.md: the bank plus one chunk's float32 similarity block."""
    return bank * dim * bank_bytes + chunk * bank * 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bank", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--k", default="10,20,100,200")
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bank-dtype", choices=("float32", "float16"), default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/out/knn_cost.json")
    args = ap.parse_args()

    from dcbench.provenance import environment
    from dcbench.transfer import knn
    from dcbench.transfer.protocol import positive_ints

    ks = positive_ints(args.k, "--k", "10,20,100,200")
    dtype = {"float32": torch.float32, "float16": torch.float16}[args.bank_dtype]
    rng = np.random.default_rng(args.seed)
    bank_x = unit_rows(rng, args.bank, args.dim)
    query_x = unit_rows(rng, args.queries, args.dim)
    bank_y = rng.integers(0, args.classes, args.bank)
    query_y = rng.integers(0, args.classes, args.queries)
    print(f"bank {bank_x.shape} + queries {query_x.shape} float16 ({(bank_x.nbytes + query_x.nbytes) / 2**20:.0f} MiB), "
          f"k {ks}, chunk {args.chunk}, bank {args.bank_dtype} on {args.device}, torch threads {torch.get_num_threads()}",
          flush=True)

    def sync():
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if torch.device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    bank = knn.normalised(bank_x, dtype, args.device)
    sync()
    t1 = time.perf_counter()
    sims, idx = knn.nearest(bank, query_x, ks[-1], args.chunk)
    sync()
    t2 = time.perf_counter()
    acc = knn.knn_accuracy(sims, idx, bank_y, query_y, ks, args.temperature, args.classes)
    t3 = time.perf_counter()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cuda_peak = torch.cuda.max_memory_allocated() if torch.device(args.device).type == "cuda" else None

    bank_bytes = torch.empty((), dtype=dtype).element_size()
    pairs = args.bank * args.queries
    full_pairs = FULL_BANK * FULL_QUERIES
    measured = {"normalise_s": t1 - t0, "search_s": t2 - t1, "vote_s": t3 - t2, "total_s": t3 - t0,
                "peak_rss_delta_mib": (rss1 - rss0) / 1024, "cuda_peak_allocated_mib": (cuda_peak / 2**20 if cuda_peak else None),
                "model_mib": model_bytes(args.bank, args.dim, args.chunk, bank_bytes) / 2**20,
                "gflops_search": 2 * pairs * args.dim / (t2 - t1) / 1e9}
    extrapolated = {
        "bank": FULL_BANK, "queries": FULL_QUERIES, "assumption": "search time ∝ bank x queries, vote time ∝ queries, "
                                                                  "normalise time ∝ bank; memory by the model",
        "normalise_s": measured["normalise_s"] * FULL_BANK / args.bank,
        "search_s": measured["search_s"] * full_pairs / pairs,
        "vote_s": measured["vote_s"] * FULL_QUERIES / args.queries,
        "model_gib": {dt: model_bytes(FULL_BANK, args.dim, args.chunk, b) / 2**30 for dt, b in (("float32", 4), ("float16", 2))},
    }
    extrapolated["total_s"] = extrapolated["normalise_s"] + extrapolated["search_s"] + extrapolated["vote_s"]
    out = {"config": {k: v for k, v in vars(args).items() if k != "out"}, "ks": ks,
           "memory_measure": "resource.getrusage(RUSAGE_SELF).ru_maxrss after the step minus before (KiB -> MiB); "
                             "on CUDA also torch.cuda.max_memory_allocated",
           "measured": measured, "extrapolated_full": extrapolated,
           "accuracy_random_labels": {str(k): v for k, v in acc.items()}, "environment": environment()}
    print(f"normalise {measured['normalise_s']:.2f} s, search {measured['search_s']:.2f} s "
          f"({measured['gflops_search']:.1f} GFLOP/s), votes {measured['vote_s']:.2f} s; peak RSS +"
          f"{measured['peak_rss_delta_mib']:.0f} MiB (model {measured['model_mib']:.0f} MiB)")
    print(f"full scale ({FULL_BANK} x {FULL_QUERIES}): ~{extrapolated['total_s'] / 3600:.2f} h on this device "
          f"(search {extrapolated['search_s']:.0f} s); memory {extrapolated['model_gib']['float32']:.1f} GiB "
          f"(float32 bank), {extrapolated['model_gib']['float16']:.1f} GiB (float16 bank)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
