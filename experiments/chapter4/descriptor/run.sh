#!/usr/bin/env bash
# Thesis §4.2, Table 4.1: cluster the penultimate layer's output before or after its ReLU.
# Smoke scale (embedded data, ~2 min per run on 2 CPU cores):  bash experiments/chapter4/descriptor/run.sh
# Full scale (Table 4.1: 85 epochs, then the MLP protocol on each checkpoint; PIC or k = 100/1K/10K):
#   dc-train --data IMAGENET/train --preset km-ImNet-Sob --epochs 85 --descriptor pre-relu  --out runs/desc-pre
#   dc-train --data IMAGENET/train --preset km-ImNet-Sob --epochs 85 --descriptor post-relu --out runs/desc-post
#   dc-transfer mlp --checkpoint runs/desc-pre/checkpoint --data IMAGENET   (and runs/desc-post)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"
run pre-relu --descriptor pre-relu
run post-relu --descriptor post-relu
figures
