#!/usr/bin/env bash
# Thesis §4.4, Figure 4.5: how often to re-cluster. Epochs of 1x and 3x |X~|/batch updates, the
# ratio edge intra-class logged every |X~|/batch updates in both (--diag-every), the same number of
# updates in all (smoke: 180 = 6 x 30 = 2 x 90; the smoke preset fixes --steps-per-epoch, so the
# epoch length is set with it).
# Smoke scale:  bash experiments/chapter4/reassignment/run.sh
# Full scale (PIC, ImageNet, 5,005 updates per |X~|/batch; also 10x and 30x):
#   dc-train --data IMAGENET/train --preset PIC-ImNet-Sob --epoch-multiplier M --epochs $((100 / M)) \
#            --diag-every 5005 --out runs/reassign-xM      for M in 1 3 10 30
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"
run x1 --steps-per-epoch 30 --epochs 6 --diag-every 30
run x3 --steps-per-epoch 90 --epochs 2 --diag-every 30
figures
