#!/usr/bin/env bash
# A fuzzing smoke run of the decoders of untrusted input (fuzz/fuzz_targets/): each
# target runs for FUZZ_SECONDS (default 20) starting from the corpus kept in
# fuzz/corpus/<target>/, which replays every input found so far and then mutates them.
# Long runs are for a developer's machine (docs/SECURITY.md, "Fuzzing"):
#
#     FUZZ_SECONDS=600 FUZZ_TARGETS=data_decode bash scripts/ci.d/40-fuzz.sh
#
# New inputs go to a scratch directory, not into the repository; a crash fails the
# stage and leaves its input in fuzz/artifacts/<target>/. The instrumented build is
# prep/40-fuzz.sh (in the background under scripts/test.sh; run alone, it runs here).
#
#   FUZZ_SECONDS   seconds per target (default 20)
#   FUZZ_TARGETS   space-separated targets (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
secs="${FUZZ_SECONDS:-20}"
all=(formation_decode gossip_decode dns_handshake_decode mdns_txt_parse peer_spec_parse data_decode cert_decode)
if [ -z "${FUZZ_TARGETS:-}" ] || [ "$FUZZ_TARGETS" = all ]; then
    targets="${all[*]}"
else
    targets="$FUZZ_TARGETS"
fi
[ -n "${PEAT_CI_PREPARED:-}" ] || bash scripts/ci.d/prep/40-fuzz.sh
echo "fuzz targets this run: $targets (${secs}s each)"
t0=$(date +%s)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $targets; do
    mkdir -p "$scratch/$t"
    echo "--- fuzzing $t for ${secs}s"
    rc=0
    cargo fuzz run -s none "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1 || rc=$?
    grep -E 'stat::number_of_executed_units|stat::new_units_added' "$scratch/$t.log" || true
    if [ "$rc" != 0 ]; then
        tail -n 40 "$scratch/$t.log" >&2
        echo "fuzz target $t failed (exit $rc); the crashing input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzzing done in $(( $(date +%s) - t0 ))s"
