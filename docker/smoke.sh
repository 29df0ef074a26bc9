#!/bin/bash
# The container stage of CI: build the images and run them end to end, for real.
#
#   bash docker/smoke.sh            (as root; tox -e docker calls it; .ci/run calls tox)
#
# 1. start a private Docker engine (its own socket, data-root and exec-root in one temp folder);
# 2. make a base image locally: debootstrap bookworm (minbase + python3) and `docker import`,
#    because no image registry is reachable here (the Dockerfile's default base stays the public one);
# 3. build dc-train and dc-transfer from docker/Dockerfile (FLAVOR=cpu by default);
# 4. docker run dc-train --help / dc-transfer --help: the presets and tasks are listed;
# 5. docker run dc-train (no arguments) -> a checkpoint in the mounted /checkpoints;
# 6. dc-bench run --engine docker (the suite driver, through the Docker SDK) runs the transfer
#    tasks on that checkpoint, one container each -> result JSONs in the mounted /results, then
#    dc-leaderboard -> LEADERBOARD.md; a second run skips them;
# 7. Ctrl-C in the middle of a dc-bench docker run leaves none of that run's containers behind,
#    and another run's container untouched;
# 8. a read-only /results is refused in one line with exit 2;
# then the files are checked (format, sha256, git sha), and the engine is stopped and its disk
# freed on every exit path, failures included.
#
# Settings (environment):
#   DC_SMOKE_TMP        parent of the temp folder (default /tmp)
#   DC_SMOKE_MIN_FREE_GB  free space required there (default 14; the run peaks near 11 GB)
#   DC_SMOKE_FLAVOR     cpu (default) or gpu
#   DC_SMOKE_TASK       transfer task(s) to run, comma-separated (default linear-imagenet,knn-graph)
#   DC_BENCH            the host's dc-bench (default: the repository's .venv/bin/dc-bench, as .ci/run makes it)
#   DC_SMOKE_TRAIN_ARGS arguments for `docker run dc-train` (default none: the no-argument run)
#   DC_SMOKE_DEB_CACHE  where debootstrap keeps its .debs between runs (default /var/cache/dcbench-debootstrap)
#   DC_SMOKE_ARTIFACTS  copy the checkpoint, results and logs here before cleaning up
#   DC_SMOKE_DEBIAN_MIRROR  mirror for debootstrap (default: debootstrap's own)
#   DC_SMOKE_PIP_MIRROR 0 to ignore the machine's local wheel mirror and use only PyPI
#   DC_SMOKE_BUILDER    buildkit (default: DOCKER_BUILDKIT=1, --progress plain) or legacy
#                       (DOCKER_BUILDKIT=0: the builder a Docker client >= 23 without the buildx
#                       plugin still has, so the Dockerfile is shown to need no BuildKit)
#   DOCKERD, DOCKER_CLI, DEBOOTSTRAP  engine, client and debootstrap binaries (default /usr/sbin/dockerd, /usr/bin/docker:
#                       Debian's 20.10 client builds with the engine's built-in BuildKit; a client
#                       >= 23 needs the buildx plugin for that, or DC_SMOKE_BUILDER=legacy)
# Exit: 0 all checks passed; 1 a check failed or the engine/build could not run (one line says
# which); 2 bad settings.

set -euo pipefail

T0=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP_PARENT=${DC_SMOKE_TMP:-/tmp}
MIN_FREE_GB=${DC_SMOKE_MIN_FREE_GB:-14}
FLAVOR=${DC_SMOKE_FLAVOR:-cpu}
BUILDER=${DC_SMOKE_BUILDER:-buildkit}
TASK=${DC_SMOKE_TASK:-linear-imagenet,knn-graph}
DC_BENCH=${DC_BENCH:-$REPO/.venv/bin/dc-bench}
DOCKERD=${DOCKERD:-/usr/sbin/dockerd}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}
DEBOOTSTRAP=${DEBOOTSTRAP:-debootstrap}
BASE_TAG=dcbench-base:bookworm-local
DEB_CACHE=${DC_SMOKE_DEB_CACHE:-/var/cache/dcbench-debootstrap}  # the .debs only (~40 MB), kept
read -r -a TRAIN_ARGS <<<"${DC_SMOKE_TRAIN_ARGS:-}"
PRESETS=(PIC-ImNet-Sob km-ImNet-Sob km-ImNet-RGB km-fl1M-Sob km-fl2M-Sob)

WORK="" DOCKERD_PID="" HTTP_PID="" PASSED=0 FAILED=0

say() { printf '[docker-smoke %4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() {  # one clear line, then the EXIT trap cleans up
    echo "docker-smoke: FAILED: $*" >&2
    exit "${2:-1}"
}
ok() { PASSED=$((PASSED + 1)); say "ok: $*"; }
check() {  # check DESCRIPTION COMMAND...: a failed check is counted and reported, not fatal
    local what=$1
    shift
    if "$@"; then ok "$what"; else FAILED=$((FAILED + 1)); echo "docker-smoke: check failed: $what" >&2; fi
}
docker() { DOCKER_HOST="unix://$WORK/docker.sock" DOCKER_BUILDKIT=$BUILDKIT "$DOCKER_CLI" "$@"; }

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n $HTTP_PID ]]; then kill "$HTTP_PID" 2>/dev/null; wait "$HTTP_PID" 2>/dev/null; fi
    if [[ -n $DOCKERD_PID ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        docker ps -aq 2>/dev/null | xargs -r "$DOCKER_CLI" -H "unix://$WORK/docker.sock" rm -f >/dev/null 2>&1
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        # Processes this run started that outlived the engine (containerd, shims) name $WORK.
        local pid
        for pid in $(pgrep -f -- "$WORK"); do
            [[ $pid != "$$" ]] && kill -KILL "$pid" 2>/dev/null
        done
        # Overlay and shm mounts of the engine, deepest first, then the folder itself.
        awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
        if [[ -n ${DC_SMOKE_ARTIFACTS:-} && -d $WORK/out ]]; then
            mkdir -p "$DC_SMOKE_ARTIFACTS" && cp -a "$WORK/out/." "$DC_SMOKE_ARTIFACTS/"
        fi
        rm -rf "$WORK"
        if [[ -e $WORK ]]; then echo "docker-smoke: could not remove $WORK" >&2; else say "engine stopped, $WORK removed"; fi
    fi
    exit "$rc"
}

# --- preconditions: one line each -------------------------------------------------------------
[[ $FLAVOR == cpu || $FLAVOR == gpu ]] || die "DC_SMOKE_FLAVOR must be cpu or gpu, not '$FLAVOR'" 2
case $BUILDER in
    buildkit) BUILDKIT=1 progress=(--progress plain) ;;
    legacy) BUILDKIT=0 progress=() ;;  # the legacy builder has no --progress
    *) die "DC_SMOKE_BUILDER must be buildkit or legacy, not '$BUILDER'" 2 ;;
esac
[[ $MIN_FREE_GB =~ ^[0-9]+$ ]] || die "DC_SMOKE_MIN_FREE_GB must be a whole number, not '$MIN_FREE_GB'" 2
[[ -d $TMP_PARENT ]] || die "DC_SMOKE_TMP=$TMP_PARENT is not a folder" 2
free_gb=$(($(df -Pk "$TMP_PARENT" | awk 'NR == 2 { print $4 }') / 1024 / 1024))
if ((free_gb < MIN_FREE_GB)); then
    die "only ${free_gb} GB free under $TMP_PARENT, the container stage needs ${MIN_FREE_GB} GB (free some, or point DC_SMOKE_TMP at a roomier folder)"
fi
[[ $(id -u) -eq 0 ]] || die "must run as root: it starts its own Docker engine (dockerd)"
[[ -x $DC_BENCH ]] || die "no dc-bench at $DC_BENCH: install the repository first (python3 -m venv .venv && .venv/bin/pip install -e '.[test]'), or set DC_BENCH" 2

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

missing=()
[[ -x $DOCKERD ]] || missing+=(docker.io)
[[ -x $DOCKER_CLI ]] || missing+=(docker-cli)
command -v "$DEBOOTSTRAP" >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    say "installing ${missing[*]} (apt-get)"
    pkgs=$(printf '%s\n' "${missing[@]}" | sed 's/^docker-cli$/docker.io/' | sort -u | tr '\n' ' ')
    # shellcheck disable=SC2086
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs; } \
        >/tmp/dcbench-docker-apt.log 2>&1 || die "apt-get install $pkgs failed (see /tmp/dcbench-docker-apt.log)"
    [[ -x $DOCKERD && -x $DOCKER_CLI ]] || die "no Docker engine: $DOCKERD or $DOCKER_CLI missing after installing docker.io"
fi

WORK=$(mktemp -d "$TMP_PARENT/dcbench-docker.XXXXXX")
mkdir -p "$WORK/out/checkpoints" "$WORK/out/results" "$WORK/out/logs" "$WORK/exec"
LOGS=$WORK/out/logs
say "work folder $WORK (${free_gb} GB free), flavour $FLAVOR, builder $BUILDER, task $TASK"

# --- 1. the engine --------------------------------------------------------------------------------
"$DOCKERD" --data-root "$WORK/docker" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "unix://$WORK/docker.sock" --storage-driver overlay2 --iptables=false --ip-masq=false \
    --bridge=none >"$LOGS/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
done
if ! docker info >/dev/null 2>&1; then
    reason=$(grep -E 'level=(fatal|error)|failed to start' "$LOGS/dockerd.log" | tail -1 | sed 's/.*msg="\([^"]*\)".*/\1/')
    die "no Docker engine: dockerd did not start (${reason:-no reason logged}; log $LOGS/dockerd.log)"
fi
say "engine up: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}')"

# --- 2. the base image -------------------------------------------------------------------------------
t=$(date +%s)
mkdir -p "$DEB_CACHE"
# shellcheck disable=SC2086  # an empty mirror setting must vanish, not become an empty argument
"$DEBOOTSTRAP" --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    --cache-dir="$DEB_CACHE" bookworm "$WORK/rootfs" ${DC_SMOKE_DEBIAN_MIRROR:-} >"$LOGS/debootstrap.log" 2>&1 \
    || die "debootstrap of the base failed (last line: $(tail -1 "$LOGS/debootstrap.log"))"
tar -C "$WORK/rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$BASE_TAG" >/dev/null \
    || die "docker import of the base failed"
# The CA certificates this machine trusts and the base does not (a TLS-intercepting proxy's): only
# those go to the build, as PEM text (EXTRA_CA_PEM), since one build argument is capped at 128 KiB.
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [[ -s $ca ]]; then
    python3 - "$ca" "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt" >"$WORK/extra-ca.pem" <<'EOF' \
        || die "could not compare the CA bundle $ca with the base's"
import pathlib, re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")
def certs(path):
    p = pathlib.Path(path)
    return pem.findall(p.read_text(errors="replace")) if p.is_file() else []
known = {"".join(c.split()) for c in certs(sys.argv[2])}
print("\n".join(c for c in certs(sys.argv[1]) if "".join(c.split()) not in known))
EOF
fi
rm -rf "$WORK/rootfs"
say "base image $BASE_TAG made in $(($(date +%s) - t))s"

# --- 3. the images ---------------------------------------------------------------------------------
GIT_SHA=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
[[ $GIT_SHA == unknown || -z $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]] || GIT_SHA+=+dirty
build_args=(--build-arg "BASE_IMAGE=$BASE_TAG" --build-arg "FLAVOR=$FLAVOR" --build-arg "DCBENCH_GIT_SHA=$GIT_SHA")
if [[ -s $WORK/extra-ca.pem ]] && grep -q 'BEGIN CERTIFICATE' "$WORK/extra-ca.pem"; then
    n_ca=$(grep -c 'BEGIN CERTIFICATE' "$WORK/extra-ca.pem")
    (($(wc -c <"$WORK/extra-ca.pem") < 120000)) \
        || die "$n_ca CA certificates of $ca are not in the base, too many for one build argument (EXTRA_CA_PEM, 128 KiB); set PIP_CERT to a bundle of the proxy's CA only" 2
    build_args+=(--build-arg "EXTRA_CA_PEM=$(cat "$WORK/extra-ca.pem")")
    say "pip in the build trusts $n_ca more CA certificate(s) from $ca (EXTRA_CA_PEM)"
fi
# This machine's pip may carry file:// indexes (a local wheel mirror); the build container cannot
# see the host's files, so serve their common root on loopback for the build (--network host).
if [[ ${DC_SMOKE_PIP_MIRROR:-1} != 0 ]]; then
    extra=$(python3 -m pip config get global.extra-index-url 2>/dev/null || true)
    roots=() urls=()
    for u in $extra; do
        [[ $u == file://* && -d ${u#file://} ]] || continue
        p=${u#file://}
        roots+=("$(dirname "$(dirname "$p")")")
        urls+=("$p")
    done
    if ((${#urls[@]})) && [[ $(printf '%s\n' "${roots[@]}" | sort -u | wc -l) -eq 1 ]]; then
        root=${roots[0]}
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        (cd "$root" && exec python3 -m http.server --bind 127.0.0.1 "$port") >"$LOGS/mirror.log" 2>&1 &
        HTTP_PID=$!
        http_urls=()
        for p in "${urls[@]}"; do http_urls+=("http://127.0.0.1:$port${p#"$root"}"); done
        build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=${http_urls[*]}" --build-arg "PIP_TRUSTED_HOST=127.0.0.1")
        say "pip: PyPI plus this machine's wheel mirror (${urls[*]}) served on 127.0.0.1:$port"
    fi
fi

declare -A BUILD_S SIZE
for target in dc-train dc-transfer; do
    t=$(date +%s)
    if ! docker build --network host -f "$REPO/docker/Dockerfile" --target "$target" -t "$target" \
        "${build_args[@]}" "${progress[@]}" "$REPO" >"$LOGS/build-$target.log" 2>&1; then
        tail -25 "$LOGS/build-$target.log" >&2
        die "docker build --target $target failed (log above)"
    fi
    BUILD_S[$target]=$(($(date +%s) - t))
    SIZE[$target]=$(docker image inspect -f '{{.Size}}' "$target")
    say "built $target in ${BUILD_S[$target]}s: $((SIZE[$target] / 1000000)) MB"
done
ok "images built"
docker images --format '  {{.Repository}}:{{.Tag}}  {{.Size}}'

# --- 4. --help lists the presets and tasks -----------------------------------------------------------
run=(docker run --rm --network none)
"${run[@]}" dc-train --help >"$LOGS/dc-train-help.txt" 2>&1 || die "docker run dc-train --help failed"
"${run[@]}" dc-transfer --help >"$LOGS/dc-transfer-help.txt" 2>&1 || die "docker run dc-transfer --help failed"
head -12 "$LOGS/dc-train-help.txt" | sed 's/^/  | /'  # head reads the file: no SIGPIPE under pipefail
sed 's/^/  | /' "$LOGS/dc-transfer-help.txt"
for p in "${PRESETS[@]}"; do
    check "dc-train --help lists preset $p" grep -q -- "$p" "$LOGS/dc-train-help.txt"
done
IFS=, read -r -a TASKS <<<"$TASK"
for task in "${TASKS[@]}"; do
    check "dc-transfer --help lists task $task" grep -q -- "$task" "$LOGS/dc-transfer-help.txt"
done

# --- 5-7. train -> transfer -> leaderboard, as the container's user ----------------------------------
CK=$WORK/out/checkpoints RES=$WORK/out/results
uid=$(docker run --rm --network none --entrypoint id dc-train -u)
gid=$(docker run --rm --network none --entrypoint id dc-train -g)
chown "$uid:$gid" "$CK" "$RES"

t=$(date +%s)
docker run --rm --network none -v "$CK:/checkpoints" dc-train "${TRAIN_ARGS[@]}" >"$LOGS/dc-train.log" 2>&1 \
    || { tail -20 "$LOGS/dc-train.log" >&2; die "docker run dc-train ${TRAIN_ARGS[*]:-(no arguments)} failed"; }
TRAIN_S=$(($(date +%s) - t))
ckpt=$(find "$CK" -name model.safetensors -printf '%h\n' | head -1)
[[ -n $ckpt ]] || die "docker run dc-train wrote no checkpoint under /checkpoints"
say "docker run dc-train ${TRAIN_ARGS[*]:-(no arguments)}: ${TRAIN_S}s, checkpoint ${ckpt#"$CK"/}"
ckpt_in=/checkpoints/${ckpt#"$CK"/}

bench() { DOCKER_HOST="unix://$WORK/docker.sock" "$DC_BENCH" run "$ckpt" --engine docker --image dc-transfer "$@"; }
t=$(date +%s)
bench --tasks "$TASK" --scale smoke --results "$RES" --leaderboard "$RES/LEADERBOARD.md" >"$LOGS/dc-bench.log" 2>&1 \
    || { tail -30 "$LOGS/dc-bench.log" >&2; die "dc-bench run --engine docker --tasks $TASK failed"; }
TRANSFER_S=$(($(date +%s) - t))
mapfile -t results < <(cd "$RES" && find . -name '*.json' -not -path './suite/*' -printf '%P\n' | sort)
((${#results[@]})) || die "dc-bench run --engine docker --tasks $TASK wrote no result JSON under /results"
say "dc-bench run --engine docker --tasks $TASK: ${TRANSFER_S}s, ${#results[@]} result file(s)"
grep '^\[' "$LOGS/dc-bench.log" | sed -n '1,4s/^/  | /p'
sed -n '/^dc-bench summary/,$p' "$LOGS/dc-bench.log" | sed 's/^/  | /'
t=$(date +%s)
bench --tasks "$TASK" --scale smoke --results "$RES" --leaderboard "$RES/LEADERBOARD.md" >"$LOGS/dc-bench-again.log" 2>&1 \
    || { tail -30 "$LOGS/dc-bench-again.log" >&2; die "the second dc-bench run --engine docker failed"; }
AGAIN_S=$(($(date +%s) - t))
check "a second dc-bench run skips every task (${AGAIN_S}s)" \
    test "$(grep -c '^  skipped' "$LOGS/dc-bench-again.log")" -eq "${#TASKS[@]}"
check "no container of the dc-bench runs is left" test -z "$(docker ps -aq --filter label=dcbench.suite.run)"

# --- 7. Ctrl-C in the middle of a docker run -----------------------------------------------------------
# Another run's container (a plain sleep) must survive; this run's must all be gone.
docker run -d --network none --label dcbench.suite.run=someone-else --entrypoint sleep dc-transfer 300 >/dev/null
RES_INT=$WORK/out/results-interrupted
mkdir -p "$RES_INT"
# Not through the bench function: $! must be dc-bench itself, not a subshell that would take the signal.
DOCKER_HOST="unix://$WORK/docker.sock" "$DC_BENCH" run "$ckpt" --engine docker --image dc-transfer --tasks lowshot \
    --scale smoke --results "$RES_INT" --run-id smoke-interrupt --no-leaderboard >"$LOGS/dc-bench-interrupt.log" 2>&1 &
bench_pid=$!
for _ in $(seq 240); do
    [[ -n $(docker ps -q --filter label=dcbench.suite.run=smoke-interrupt) ]] && break
    kill -0 "$bench_pid" 2>/dev/null || break
    sleep 0.5
done
running=$(docker ps -q --filter label=dcbench.suite.run=smoke-interrupt | wc -l)
sleep 3
kill -INT "$bench_pid" 2>/dev/null
set +e
wait "$bench_pid"
int_rc=$?
set -e
left=$(docker ps -aq --filter label=dcbench.suite.run=smoke-interrupt | wc -l)
other=$(docker ps -q --filter label=dcbench.suite.run=someone-else | wc -l)
say "Ctrl-C: dc-bench exit $int_rc; its containers: $running running before, $left after; the other run's: $other"
check "Ctrl-C stops dc-bench (exit 130) and removes its running container, only its own" \
    test "$int_rc" -eq 130 -a "$running" -eq 1 -a "$left" -eq 0 -a "$other" -eq 1
docker ps -aq --filter label=dcbench.suite.run=someone-else | xargs -r "$DOCKER_CLI" -H "unix://$WORK/docker.sock" rm -f >/dev/null

# --- 8. bad input: an output folder the container cannot write -----------------------------------------
set +e
docker run --rm --network none -v "$CK:/checkpoints:ro" -v "$RES:/results:ro" \
    dc-transfer "$TASK" --checkpoint "$ckpt_in" --scale smoke >"$LOGS/readonly.log" 2>&1
ro_rc=$?
set -e
say "read-only /results: exit $ro_rc: $(head -1 "$LOGS/readonly.log")"
check "a read-only /results is refused with exit 2 in one line" \
    test "$ro_rc" -eq 2 -a "$(wc -l <"$LOGS/readonly.log")" -eq 1

# --- the files -------------------------------------------------------------------------------------
say "files the containers wrote:"
(cd "$WORK/out" && find checkpoints results -type f -printf '  %-78p %10s bytes\n' | sort)
check "checkpoint and its meta.json verify against each other" python3 - "$ckpt" <<'EOF'
import hashlib, json, sys, pathlib
d = pathlib.Path(sys.argv[1]); meta = json.loads((d / "meta.json").read_text())
sha = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
blob = json.dumps(meta)
assert sha in blob, f"sha256 {sha} not in meta.json"
assert "dcbench-train" in blob, "meta.json does not say the trainer made it"
EOF
check "result JSON(s) name the task, the checkpoint's sha256 and the image's git sha" \
    python3 - "$ckpt" "$RES" "$TASK" "$GIT_SHA" <<'EOF'
import hashlib, json, sys, pathlib
ck, res, tasks, sha = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
wsha = hashlib.sha256((ck / "model.safetensors").read_bytes()).hexdigest()
files = sorted(f for f in res.rglob("*.json") if "suite" not in f.relative_to(res).parts)
assert sorted(json.loads(f.read_text()).get("task") for f in files) == sorted(tasks), files
for f in files:
    r = json.loads(f.read_text())
    assert r["checkpoint"]["sha256"] == wsha, (f, "checkpoint sha256 differs")
    assert r["metrics"], (f, "no metrics")
    assert r["environment"]["git_sha"] == sha, (f, r["environment"]["git_sha"], sha)
    print(f"  {f.name}: {r['metrics']}")
EOF
check "dc-bench ran dc-leaderboard: LEADERBOARD.md beside the results" test -s "$RES/LEADERBOARD.md"

STAGE_S=$(($(date +%s) - T0))
echo
echo "docker-smoke summary (flavour $FLAVOR, builder $BUILDER, task $TASK)"
for target in dc-train dc-transfer; do
    printf '  image %-12s %6d MB   built in %4ds\n' "$target" $((SIZE[$target] / 1000000)) "${BUILD_S[$target]}"
done
printf '  docker run dc-train        %4ds (%s)\n' "$TRAIN_S" "${TRAIN_ARGS[*]:-no arguments}"
printf '  dc-bench run --engine docker %4ds (%s; again, all skipped: %ds)\n' "$TRANSFER_S" "$TASK" "$AGAIN_S"
printf '  container stage total      %4ds\n' "$STAGE_S"
echo "docker: $PASSED passed, $FAILED failed"
((FAILED == 0)) || exit 1
