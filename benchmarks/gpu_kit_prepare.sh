#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what benchmarks/gpu_kit.sh needs beside the working tree on a
# lent GPU machine, in paths .git/info/exclude ignores (so that they travel only when carried):
#   .whl/      cp312 wheels of faiss-cpu and jsonschema's needs (the GPU machine has neither)
#   .before/   the trainer before the GPU work (ee62095), for the side-by-side "before" run
#   .gpudata/  the embedded demo data's classification split (train_learns.py), ~36 MB
#   .kit-sha   this checkout's commit: the copy of the tree on the GPU machine has no .git
# Then, with the device tool: run `bash benchmarks/gpu_kit.sh` with carry
# [".whl", ".before", ".gpudata", ".kit-sha"] and timeout_s 560.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
for d in /.whl/ /.before/ /.gpudata/ /.kit-sha; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
rm -rf .whl .before .gpudata .kit-sha
git rev-parse HEAD | tr -d '\n' > .kit-sha
[ -z "$(git status --porcelain --untracked-files=no)" ] || echo -n "+dirty" >> .kit-sha
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl faiss-cpu==1.15.1 jsonschema jsonschema-specifications referencing rpds-py
mkdir .before && git archive ee62095 | tar -x -C .before && rm -rf .before/examples .before/tests
src=$("$py" -c "from dcbench.embedded import embedded_data; print(embedded_data('demo', 0))")
dst=.gpudata/$(basename "$src")
mkdir -p "$dst" && cp -r "$src/classification" "$src/dcbench_data.json" "$dst/"
du -sh .whl .before .gpudata
