#!/usr/bin/env bash
# Batches uniform over clusters (the thesis's intent, the default) or proportional to cluster size
# (what the original code does). The committed figures here were drawn from the two runs in README.md.
# Smoke scale:  bash experiments/chapter4/sampler/run.sh
# Full scale:   dc-train --data IMAGENET/train --preset km-ImNet-Sob --sampler {uniform,proportional}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"
run uniform --sampler uniform
run proportional --sampler proportional
figures
