#!/usr/bin/env bash
# The GPU measurements in one call on a lent GPU machine (an H200 with 16 cores in mind), every stage
# time-boxed so that one failure does not cost the others. Expects, beside the working tree
# (benchmarks/gpu_kit_prepare.sh makes them and says how to call the device tool):
#   .whl/      faiss-cpu, jsonschema and its needs as cp312 wheels (the machine has neither)
#   .before/   `git archive ee62095` (the trainer before the GPU work), for the side-by-side "before"
#   .gpudata/  a copy of the embedded demo data's classification split (train_learns.py)
#   .kit-sha   the commit the kit was prepared from (recorded in every result: the copy has no .git)
# Writes everything to $OUT: run.log and one JSON per benchmark.
set -u
OUT=${OUT:-/tmp/gpu-kit-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
repo=$(pwd)
log="$OUT/run.log"
exec > >(tee -a "$log") 2>&1

# One device call may run 560 s: every step's timeout is cut to what is left of BUDGET, so a slow
# step costs the later ones their time but never the files already written.
START=$(date +%s)
BUDGET=${BUDGET:-$([ "${DRY:-0}" = 1 ] && echo 3600 || echo 540)}
step() { echo; echo "=== $(date -u +%T) [$(( $(date +%s) - START )) s of $BUDGET] $*"; }
tb() {  # tb SECONDS CMD...: CMD under `timeout SECONDS`, or less if the budget has less left
  local left=$(( BUDGET - ($(date +%s) - START) - 5 )) t=$1 rc; shift
  [ "$t" -gt "$left" ] && t=$left
  if [ "$t" -lt 10 ]; then echo "skipped, budget spent: $*"; return 124; fi
  timeout "$t" "$@"; rc=$?
  [ $rc -eq 124 ] && echo "cut by its time box after $t s (its output so far is above): $*"
  return $rc
}

step setup
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
nproc; python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.version.cuda)"
if [ "${DRY:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target ${T:-/tmp}/site .whl/*.whl || exit 1
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target ${T:-/tmp}/dcb . || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target ${T:-/tmp}/before .before || exit 1
export PYTHONPATH=${T:-/tmp}/dcb:${T:-/tmp}/site DCBENCH_DATA_CACHE="$repo/.gpudata"
# the results name the commit they measured, from the file the prepare script wrote
DCBENCH_GIT_SHA=$(cat .kit-sha 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)
export DCBENCH_GIT_SHA; echo "git sha: $DCBENCH_GIT_SHA"
W=${WORK:-/tmp/work}; mkdir -p $W
# DRY=1: the same steps at toy sizes on the CPU, to check this script before spending device time.
if [ "${DRY:-0}" = 1 ]; then
  DEV=cpu; CL="--n 20000 --d 512 --k 100 --check-n 5000 --check-k 50 --device cpu"
  EP="--n 256 --k 16 --batch-size 32 --workers 2 --device cpu"; NB=256; BK=16; BW=2; NBK="--batches 2 --batch-size 16"
  TL="--seeds 0 --epochs 1 --steps-per-epoch 3 --subset-size 256 --k 10 --probe-train-per-class 20"
else
  DEV=cuda; CL=""; EP="--n 100000 --workers 15"; NB=25600; BK=1000; BW=15; NBK=""; TL="--epochs 6 --lr 0.02"
fi

step "0. nvJPEG decode while a backward is queued, direct vs synchronised, against the CPU decode"
tb 60 python3 benchmarks/nvjpeg_stream_race.py $([ "${DRY:-0}" = 1 ] && echo "--rounds 2 --batch-size 8") \
    --out "$OUT/nvjpeg_stream_race.json"

step "1. clustering stage at 1.28M x 4096 -> 256 -> 10,000 (torch on the GPU) + agreement with faiss-cpu / pca_whiten"
tb 240 python3 benchmarks/gpu_clustering.py $CL --out "$OUT/gpu_clustering.json"

step "2. gpu_epoch after: N=100,000, k=10,000, 15 workers, defaults (nvjpeg, bf16, torch engine, diag sample 20k)"
tb 360 python3 benchmarks/gpu_epoch.py $EP --compare-loaders --workdir $W/e100k \
    --out "$OUT/gpu_epoch_cuda_100000.json" \
  || tb 300 python3 benchmarks/gpu_epoch.py $EP --loader draft --workdir $W/e100k \
    --out "$OUT/gpu_epoch_cuda_100000_draft.json"
step "2b. nvjpeg breakdown: batched decode, per-image vs packed crop (crop_packed), side by side"
tb 60 python3 benchmarks/nvjpeg_breakdown.py --root $W/e100k/data $NBK --device $DEV --out "$OUT/nvjpeg_breakdown.json"

step "3. before, side by side: ee62095's dc-train (before the GPU work), 25,600 JPEGs, k=1000, 15 workers"
(cd /tmp && python3 -c "import sys; sys.path.insert(0, '$repo/benchmarks'); from jpeg_data import make_jpegs; \
make_jpegs('$W/b25k', $NB, 400, 350, classes=1000, seed=0)")
for tree in before after; do
  if [ $tree = before ]; then pp=${T:-/tmp}/before:${T:-/tmp}/site; extra=""; else pp=${T:-/tmp}/dcb:${T:-/tmp}/site; extra="--no-faiss-gpu"; fi
  (cd /tmp && PYTHONPATH=$pp tb 200 python3 -m dcbench.train.cli --scale full --data $W/b25k --out $W/run-$tree \
      --epochs 2 --k $BK --workers $BW --device $DEV --snapshot-every 0 --quiet $extra \
   && python3 -c "import json; [print('$tree', json.loads(l)['epoch'], json.loads(l)['time']) for l in open('$W/run-$tree/log.jsonl')]" \
   && sed "s/^{/{\"tree\": \"$tree\", /" $W/run-$tree/log.jsonl >> "$OUT/before_after_logs.jsonl")
done

step "4. train_learns: same gain over random init in bf16 as in fp32 (3 seeds, GPU training, CPU probes)"
for p in fp32 bf16; do
  tb 150 python3 benchmarks/train_learns.py --device $DEV --precision $p $TL --layers conv5 \
      --workdir $W/tl-$p --out "$OUT/train_learns_${p}_cuda.json" | grep -v '^{' ; \
  python3 -c "import json; d=json.load(open('$OUT/train_learns_${p}_cuda.json')); print('$p', d.get('summary'))"
done
step "5. --deterministic: its cost, and whether runs with it give the same weights on the GPU"
tb 90 python3 benchmarks/deterministic_cost.py --device $DEV --epochs $([ "${DRY:-0}" = 1 ] && echo 1 || echo 2) \
    --rounds 2 --out "$OUT/deterministic_cost_$DEV.json"
step "6. gpu_epoch, ResNet-50, last: the same JPEGs and settings, in what is left"
tb 300 python3 benchmarks/gpu_epoch.py $EP --arch resnet50 --workdir $W/e100k --out "$OUT/gpu_epoch_cuda_100000_resnet50.json"
step done
