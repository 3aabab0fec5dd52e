#!/usr/bin/env bash
# Packaging: tests the release artifacts that prep/30-package.sh built (scripts/test.sh
# runs it in the background and waits for it; run alone, this stage builds them
# first): the .debs (lintian, contents, unit, dpkg lifecycle in a throwaway root), the
# binaries (qemu-user, a three-architecture LAN in network namespaces named pk-*), the
# OCI image (skopeo/umoci, unpacked roots in namespaces, docker if present), and the
# amd64 .deb under systemd booted in Docker containers (test-systemd.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

[ -n "${PEAT_CI_PREPARED:-}" ] || bash scripts/ci.d/prep/30-package.sh

status=0
for t in packaging/tests/test-deb.sh packaging/tests/test-binaries.sh packaging/tests/test-oci.sh \
    packaging/tests/test-systemd.sh; do
    t0=$(date +%s)
    echo "=== $t"
    bash "$t" || status=1
    echo "=== $t done in $(( $(date +%s) - t0 ))s"
done
exit "$status"
