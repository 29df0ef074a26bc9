#!/usr/bin/env bash
# Thesis §4.3, Figure 4.4 (crops): RandomResizedCrop (random-sized, the default), a fixed-size crop
# at a random place of the resized image (random), and the centre crop (central); horizontal flips.
# The thesis trained with PIC for 50 epochs; these scripts keep dc-train's default k-means so that
# the smoke runs stay short; add --preset PIC-ImNet-Sob for the thesis's setting.
# Smoke scale:  bash experiments/chapter4/crop/run.sh
# Full scale:   dc-train --data IMAGENET/train --preset PIC-ImNet-Sob --epochs 50 --crop {random-sized,random,central}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"
run random-sized --crop random-sized
run central --crop central
if [[ -z ${CHAPTER4_SHORT:-} ]]; then run random --crop random; fi
figures
