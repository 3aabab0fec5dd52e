#!/usr/bin/env bash
# Unit tests and end-to-end tests between real sidecar processes (loopback and network
# namespaces). Needs root for the namespaces.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --locked --bins
cargo test --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-2}"
