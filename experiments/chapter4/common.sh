# Sourced by every comparison's run.sh (bash): runs dc-train once per variant, then dc-figures.
#   bash experiments/chapter4/<name>/run.sh [OUT]
# OUT (default runs/chapter4/<name>) receives one dc-train folder per variant and FIGURES.md with
# its PNGs (FIGURES: another path for that page). DC_TRAIN_ARGS adds flags to every run (tox -e chapter4 shortens the runs with it).
# Running a script again on the same OUT resumes or skips the finished runs (dc-train resumes).
set -euo pipefail
name=$(basename "$here")
OUT=${1:-${OUT:-runs/chapter4/$name}}
runs=()
run() {
    local tag=$1
    shift
    echo "== $name/$tag: dc-train $* ${DC_TRAIN_ARGS:-}" >&2
    # shellcheck disable=SC2086  # DC_TRAIN_ARGS is a list of flags
    dc-train --out "$OUT/$tag" --quiet "$@" ${DC_TRAIN_ARGS:-}
    runs+=("$OUT/$tag")
}
figures() {
    dc-figures "${runs[@]}" --out "${FIGURES:-$OUT/FIGURES.md}"
}
