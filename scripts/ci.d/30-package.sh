#!/usr/bin/env bash
# Packaging: builds every release artifact once (packaging/build.sh: binaries for
# x86_64, aarch64 and armv7, three .debs, the multi-arch OCI image, checksums), then
# tests them: the .debs (lintian, contents, unit, dpkg lifecycle in a throwaway root),
# the binaries (qemu-user, a three-architecture LAN in network namespaces named pk-*),
# the OCI image (skopeo/umoci, unpacked roots in namespaces, docker if present), and the
# amd64 .deb under systemd booted in Docker containers (test-systemd.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

t0=$(date +%s)
rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl \
    armv7-unknown-linux-gnueabihf >/dev/null 2>&1
# cargo-deb is kept in ~/.cargo/bin between runs; installed once (about 2 min).
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.'; then
    cargo install cargo-deb --version '^3.8' --locked
fi
echo "packaging tools ready in $(( $(date +%s) - t0 ))s"

t0=$(date +%s)
packaging/build.sh all
echo "packaging/build.sh all took $(( $(date +%s) - t0 ))s"

status=0
for t in packaging/tests/test-deb.sh packaging/tests/test-binaries.sh packaging/tests/test-oci.sh \
    packaging/tests/test-systemd.sh; do
    t0=$(date +%s)
    echo "=== $t"
    bash "$t" || status=1
    echo "=== $t done in $(( $(date +%s) - t0 ))s"
done
exit "$status"
