#!/usr/bin/env bash
# Runs every check that CI runs: installs what the tests need, then lint, tests and
# packaging. Run it as root on a Debian-like machine (network namespaces, apt):
#
#     sudo ./scripts/test.sh            # everything
#     sudo ./scripts/test.sh 20-test    # only the stages whose name starts so
#
# Stages live in scripts/ci.d/ and run in name order; each one is self-contained.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$HOME/.cargo/bin:$PATH"

start=$(date +%s)
for stage in scripts/ci.d/*.sh; do
    name=$(basename "$stage" .sh)
    if [ $# -gt 0 ]; then
        match=0
        for want in "$@"; do [[ "$name" == "$want"* ]] && match=1; done
        [ "$match" = 1 ] || continue
    fi
    t0=$(date +%s)
    echo "=== stage $name"
    bash "$stage"
    echo "=== stage $name done in $(( $(date +%s) - t0 ))s"
done
echo "=== all stages passed in $(( $(date +%s) - start ))s"
