#!/usr/bin/env bash
# Preparation of 40-fuzz (runs in the background, see scripts/test.sh): cargo-fuzz and
# the instrumented build of every target in one cargo run (the sidecar is instrumented
# once, each target only adds a link). Cold, the build takes 6-9 min of a 2-core
# machine; in the background it overlaps the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PATH="$HOME/.cargo/bin:$PATH"
# cargo fuzz needs nightly flags; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
t0=$(date +%s)
# The sanitizer is off: the targets are safe Rust (a panic is what we look for), and
# ASan only adds build time.
cargo fuzz build -s none
echo "fuzz build took $(( $(date +%s) - t0 ))s"
