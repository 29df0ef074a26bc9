#!/usr/bin/env bash
# Thesis §4.2, Figure 4.2: three MLP heads, PIC clustering, the descriptor taken just before the
# last FC: Full MLP (FC-ReLU-FC-ReLU-FC, so after fc7's ReLU), 2FC MLP (FC-ReLU-FC: after fc6's
# ReLU) and "no ReLU" (FC-ReLU-FC-FC: fc7 without ReLU, DeepCluster's final choice).
# Smoke scale:  bash experiments/chapter4/head/run.sh
# Full scale:   the same three runs with --data IMAGENET/train --scale full --epochs 50 (Figure 4.2's span
#               is "a few epochs"), then dc-figures on the three folders.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"
run full --preset PIC-ImNet-Sob --head full --descriptor post-relu
run 2fc --preset PIC-ImNet-Sob --head 2fc --descriptor post-relu
run no-relu --preset PIC-ImNet-Sob --head no-relu --descriptor pre-relu
figures
