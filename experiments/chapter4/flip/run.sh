#!/usr/bin/env bash
# Thesis §4.3, Figure 4.4 (flips): horizontal (the default), vertical, none; random-sized crops.
# Smoke scale:  bash experiments/chapter4/flip/run.sh
# Full scale:   dc-train --data IMAGENET/train --preset PIC-ImNet-Sob --epochs 50 --flip {horizontal,vertical,none}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"
run horizontal --flip horizontal
run vertical --flip vertical
run none --flip none
figures
