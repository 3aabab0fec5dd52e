#!/usr/bin/env bash
# Fuzzes the decoders of untrusted input (fuzz/fuzz_targets/) for a bounded time each,
# starting from the corpus kept in fuzz/corpus/<target>/. New inputs the fuzzer finds go
# to a scratch directory, not into the repository; a crash fails the stage and leaves
# its input in fuzz/artifacts/<target>/.
#
# Budget: about 6 minutes in all, including building the fuzz crate (with the sanitizer
# off: the targets are safe Rust, so ASan adds build time and finds nothing the
# panic-on-crash libFuzzer hook does not). cargo fuzz needs nightly flags; on a stable
# toolchain RUSTC_BOOTSTRAP=1 enables them.
#
#   FUZZ_SECONDS   seconds per target (default 30)
#   FUZZ_TARGETS   space-separated targets (default: all five)
set -euo pipefail
cd "$(dirname "$0")/../.."
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
secs="${FUZZ_SECONDS:-30}"
targets="${FUZZ_TARGETS:-formation_decode gossip_decode dns_handshake_decode mdns_txt_parse peer_spec_parse}"
t0=$(date +%s)
cargo fuzz build -s none
echo "fuzz build took $(( $(date +%s) - t0 ))s"
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
