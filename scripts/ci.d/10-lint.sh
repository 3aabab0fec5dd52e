#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo fmt --all --check
# Imports between modules go one way (layer table in the script).
python3 scripts/check-layers.py
cargo clippy --all-targets --locked -- -D warnings
