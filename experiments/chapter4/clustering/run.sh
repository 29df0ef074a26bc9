#!/usr/bin/env bash
# Thesis §4.6 and Table 5.1: k-means against Power Iteration Clustering, same network and data.
# Smoke scale:  bash experiments/chapter4/clustering/run.sh
# Full scale:   dc-train --data IMAGENET/train --preset {km-ImNet-Sob,PIC-ImNet-Sob}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"
run kmeans --preset km-ImNet-Sob
run pic --preset PIC-ImNet-Sob
figures
