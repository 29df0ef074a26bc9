#!/bin/bash
# Entry point of the dcbench images:  dc-entrypoint COMMAND [ARGS...]
#
# COMMAND is the image's own tool (dc-train or dc-transfer); a first argument naming another
# dc-* tool runs that one instead (`docker run dc-transfer dc-leaderboard /results/*.json`).
# Arguments pass through unchanged, with three container defaults added when absent:
#   dc-train             --out /checkpoints/<preset or "default">
#   dc-transfer TASK     --out /results
#   both                 --data /data   when a non-empty folder is mounted there
# Before starting, the output folder is checked: a folder the container's user cannot write
# (a read-only mount, a host folder owned by someone else) is one clear line and exit 2.
set -euo pipefail

CKPT_DIR=${DC_CHECKPOINTS:-/checkpoints}   # the mount points; variables only for the tests
RESULTS_DIR=${DC_RESULTS:-/results}
DATA_DIR=${DC_DATA:-/data}

cmd=${1:?usage: dc-entrypoint COMMAND [ARGS...]}
shift
if [[ $# -gt 0 && $1 == dc-* ]] && command -v "$1" >/dev/null 2>&1; then
    cmd=$1
    shift
fi
args=("$@")

help=0 out="" data="" preset="" task=""
for ((i = 0; i < ${#args[@]}; i++)); do
    a=${args[i]}
    next=${args[i + 1]-}
    case $a in
        -h | --help) help=1 ;;
        --out) out=$next ;;
        --out=*) out=${a#--out=} ;;
        --data) data=$next ;;
        --data=*) data=${a#--data=} ;;
        --preset) preset=$next ;;
        --preset=*) preset=${a#--preset=} ;;
        -*) ;;
        *) if [[ -z $task && $i -eq 0 ]]; then task=$a; fi ;;
    esac
done
if [[ $help -eq 1 || ($cmd == dc-transfer && -z $task) ]]; then
    exec "$cmd" "$@"   # help and usage errors: nothing to add, nothing to write
fi

extra=()
case $cmd in
    dc-train)
        if [[ -z $out ]]; then
            out=$CKPT_DIR/${preset:-default}
            extra+=(--out "$out")
        fi
        ;;
    dc-transfer)
        if [[ -z $out ]]; then
            out=$RESULTS_DIR
            extra+=(--out "$out")
        fi
        ;;
    *)
        out=${out:-$PWD}
        ;;
esac
if [[ ($cmd == dc-train || $cmd == dc-transfer) && -z $data && -d $DATA_DIR ]] \
    && [[ -n $(find "$DATA_DIR" -mindepth 1 -maxdepth 1 -print -quit 2>/dev/null) ]]; then
    echo "dc-entrypoint: using the data mounted at $DATA_DIR (pass --data to choose another root)" >&2
    extra+=(--data "$DATA_DIR")
fi

# The output folder, or its nearest existing parent, must take a file from this user.
probe=$out
while [[ ! -e $probe && $probe != / && $probe != . ]]; do probe=$(dirname "$probe"); done
if [[ ! -d $probe ]] || ! tmp=$(mktemp -p "$probe" .dc-write-test.XXXXXX 2>/dev/null); then
    [[ $probe == "$out" ]] || probe="$probe (for $out)"
    echo "error: $cmd: cannot write to $probe as uid $(id -u) (gid $(id -g)) in the container;" \
         "mount a writable folder there (not :ro) and chown it to $(id -u):$(id -g)," \
         "or run with --user \$(id -u):\$(id -g)" >&2
    exit 2
fi
rm -f "$tmp"

exec "$cmd" "$@" "${extra[@]}"
