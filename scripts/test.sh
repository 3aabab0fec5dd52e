#!/usr/bin/env bash
# Runs every check that CI runs: installs what the tests need, then lint, tests and
# packaging. Run it as root on a Debian-like machine (network namespaces, apt):
#
#     sudo ./scripts/test.sh            # everything (about 40 min cold on 2 cores)
#     sudo ./scripts/test.sh 20-test    # only the stages whose name starts so
#
# Stages live in scripts/ci.d/ and run in name order; each one is self-contained.
#
# A stage may have a preparation, scripts/ci.d/prep/<stage>.sh: a build that needs no
# quiet machine (the release cross builds and packages, the instrumented fuzz build).
# Preparations of the selected stages start in the background once 00-deps is done, at
# the lowest CPU and I/O priority (SCHED_IDLE, nice 19, idle I/O class): they use only
# the CPU that the end-to-end tests and the bench leave idle, so they neither delay
# nor disturb those, and a cold run no longer pays for them one after the other. A
# stage waits for its preparation (printing its log) before it starts. Logs:
# target/ci/prep-<stage>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$HOME/.cargo/bin:$PATH"
# Disk: a CI machine may have only a few GB free, and a cold run writes every debug
# test binary, three release targets and a fuzz build. A CI build happens once, so
# incremental caches only cost space; line tables keep file:line in backtraces at
# about a third of full debug info. A developer's own `cargo test` is unaffected.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
# Below this much free space the preparations run one after the other, at their own
# stage, instead of beside the tests (a cold run's artifacts need about 12 GB).
PREP_MIN_FREE_GB="${PREP_MIN_FREE_GB:-20}"

free_gb() { df -P --block-size=1G . | awk 'NR == 2 { print $4 }'; }
disk_report() { # disk_report WHEN
    echo "=== disk $1: $(free_gb) GB free, target/ holds $(du -sh target 2>/dev/null | cut -f1)"
}

selected() { # selected NAME: whether the command line asks for this stage
    [ "${#WANT[@]}" -eq 0 ] && return 0
    local want
    for want in "${WANT[@]}"; do [[ "$1" == "$want"* ]] && return 0; done
    return 1
}
WANT=("$@")

declare -A PREP_PID=()
prep_dir=target/ci
stop_preps() {
    local name
    for name in "${!PREP_PID[@]}"; do
        # Each preparation leads its own process group (setsid): end all of it.
        kill -- "-${PREP_PID[$name]}" 2>/dev/null || true
    done
}
trap stop_preps EXIT

start_preps() {
    local prep name
    mkdir -p "$prep_dir"
    if [ "$(free_gb)" -lt "$PREP_MIN_FREE_GB" ]; then
        echo "=== only $(free_gb) GB free (< $PREP_MIN_FREE_GB): each stage builds its own artifacts when it starts"
        return 0
    fi
    for prep in scripts/ci.d/prep/*.sh; do
        [ -e "$prep" ] || continue
        name=$(basename "$prep" .sh)
        selected "$name" || continue
        rm -f "$prep_dir/prep-$name.rc"
        # The rc file is written by the inner shell, so a killed run leaves none.
        setsid bash -c 'chrt --idle 0 nice -n 19 ionice -c 3 bash "$1"; echo $? >"$2"' \
            _ "$prep" "$prep_dir/prep-$name.rc" >"$prep_dir/prep-$name.log" 2>&1 &
        PREP_PID[$name]=$!
        echo "=== preparation $name started in the background (log: $prep_dir/prep-$name.log)"
    done
}

wait_prep() { # wait_prep STAGE: waits for the stage's preparation; fails if it failed
    local name=$1 t0 rc
    [ -n "${PREP_PID[$name]:-}" ] || return 0
    t0=$(date +%s)
    wait "${PREP_PID[$name]}" 2>/dev/null || true
    unset "PREP_PID[$name]"
    rc=$(cat "$prep_dir/prep-$name.rc" 2>/dev/null || echo missing)
    echo "=== preparation $name: waited $(( $(date +%s) - t0 ))s for it; its log:"
    sed 's/^/    /' "$prep_dir/prep-$name.log"
    if [ "$rc" != 0 ]; then
        echo "=== preparation $name failed (exit $rc)" >&2
        return 1
    fi
    export PEAT_CI_PREPARED=1
}

start=$(date +%s)
mkdir -p target
disk_report "at the start"
preps_started=0
for stage in scripts/ci.d/*.sh; do
    name=$(basename "$stage" .sh)
    # Preparations need the deps stage's packages (cross compilers, tools).
    if [ "$preps_started" = 0 ] && [[ "$name" > "00-deps" ]]; then
        start_preps
        preps_started=1
    fi
    selected "$name" || continue
    t0=$(date +%s)
    echo "=== stage $name"
    wait_prep "$name"
    bash "$stage"
    unset PEAT_CI_PREPARED
    echo "=== stage $name done in $(( $(date +%s) - t0 ))s"
    disk_report "after $name"
done
echo "=== all stages passed in $(( $(date +%s) - start ))s"
