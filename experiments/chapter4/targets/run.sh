#!/usr/bin/env bash
# Thesis §4.7, Figure 4.8: what the network is trained on. DeepCluster's clusters re-made every
# epoch, the clusters of the first epoch held (fixed-clusters, Figure 4.8b), and the labels
# (the supervised reference of every table, with centre-crop top-1 on val logged each epoch).
# Smoke scale:  bash experiments/chapter4/targets/run.sh
# Full scale (the supervised reference: 90 epochs, Table 4.2):
#   dc-train --data IMAGENET/train --preset sup-ImNet-Sob --out runs/supervised      # val: IMAGENET/val
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"
run clusters --targets clusters
run fixed-clusters --targets fixed-clusters
run labels --preset sup-ImNet-Sob
figures
