#!/usr/bin/env bash
# Unit tests and end-to-end tests between real sidecar processes (loopback and network
# namespaces). Needs root for the namespaces.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The full suite skips nothing: with CI set, a test that needs root or a tool it lacks
# fails (tests/common/skip.rs) rather than printing SKIP, whoever runs this script.
export CI="${CI:-true}"
cargo build --locked --bins
cargo test --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-2}"
