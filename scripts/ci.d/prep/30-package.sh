#!/usr/bin/env bash
# Preparation of 30-package (runs in the background, see scripts/test.sh): the
# packaging tools, then every release artifact (packaging/build.sh all: binaries for
# x86_64, aarch64 and armv7, three .debs, the multi-arch OCI image, checksums).
#
# CI builds these with thin LTO over 16 codegen units instead of the release profile's
# fat LTO in one unit: the stage checks the packaging and how the binaries behave, and
# fat LTO's single-threaded link was most of the stage's time (three targets took about
# 18 min of a 2-core machine). A release is built with `packaging/build.sh all` as it
# is, with the profile in Cargo.toml. Set CI_FULL_LTO=1 to build here as a release does.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PATH="$HOME/.cargo/bin:$PATH"

t0=$(date +%s)
rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl \
    armv7-unknown-linux-gnueabihf >/dev/null 2>&1
# cargo-deb is kept in ~/.cargo/bin between runs; installed once (about 2 min).
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.'; then
    cargo install cargo-deb --version '^3.8' --locked
fi
echo "packaging tools ready in $(( $(date +%s) - t0 ))s"

# The Debian root file system that test-systemd.sh boots (downloads, little CPU), side
# by side with the build. A failure here is reported by the test itself, later.
mkdir -p target/ci
PREPARE_ONLY=1 bash packaging/tests/test-systemd.sh >target/ci/systemd-rootfs.log 2>&1 &
rootfs=$!
trap 'kill "$rootfs" 2>/dev/null || true' EXIT

if [ -z "${CI_FULL_LTO:-}" ]; then
    export CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
t0=$(date +%s)
packaging/build.sh all
echo "packaging/build.sh took $(( $(date +%s) - t0 ))s"
wait "$rootfs" || echo "the systemd test's root file system is not ready (test-systemd.sh retries and reports):"
sed 's/^/    /' target/ci/systemd-rootfs.log
