#!/usr/bin/env bash
# Thesis §4.7, Table 4.2 and Figure 4.8b: SGT, updating only some rows of the top layer per batch.
# At smoke scale the 10 labels are fewer than any SGT size, so SGT is shown on fixed clusters
# (k = 50, Figure 4.8b's setting) with 16 and 32 rows; the speed side (Table 4.3) is
# benchmarks/sgt_timing.py.
# Smoke scale:  bash experiments/chapter4/sgt/run.sh
# Full scale (Table 4.2: supervised, no approximation / SGT 256 / SGT 512):
#   dc-train --data IMAGENET/train --preset sup-ImNet-Sob --sgt {0,256,512} --out runs/sup-sgt-N
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"
run no-approx --targets fixed-clusters --sgt 0
run sgt16 --targets fixed-clusters --sgt 16
run sgt32 --targets fixed-clusters --sgt 32
figures
