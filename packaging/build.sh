#!/usr/bin/env bash
# Builds every release artifact of peat-sidecar into dist/ (or $DIST_DIR):
#   - release binaries for x86_64 (musl, static), aarch64 (musl, static) and
#     armv7 (gnueabihf, glibc >= 2.34);
#   - .deb packages for amd64, arm64 and armhf (cargo-deb);
#   - a multi-arch OCI image (index with linux/amd64 and linux/arm64), as an
#     oci-archive, built with buildah without a container engine;
#   - SHA256SUMS over all of them.
#
# Needs: rustup, cargo-deb, buildah, and the cross toolchains of
# scripts/apt-packages.txt (gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf,
# musl-tools). The compilers and linkers per target are set in .cargo/config.toml.
#
#     packaging/build.sh              # everything
#     SKIP_OCI=1 packaging/build.sh   # binaries and .debs only
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DIST_DIR=${DIST_DIR:-$root/dist}
# target triple -> Debian architecture, and the OCI architecture for the static ones.
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
declare -A DEB_ARCH=([x86_64-unknown-linux-musl]=amd64 [aarch64-unknown-linux-musl]=arm64 [armv7-unknown-linux-gnueabihf]=armhf)
declare -A OCI_ARCH=([x86_64-unknown-linux-musl]=amd64 [aarch64-unknown-linux-musl]=arm64)
declare -A SHORT=([x86_64-unknown-linux-musl]=x86_64-linux-musl [aarch64-unknown-linux-musl]=aarch64-linux-musl [armv7-unknown-linux-gnueabihf]=armv7-linux-gnueabihf)

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "build.sh: cannot read the version from Cargo.toml" >&2; exit 1; }

step() { echo "--- $* ($(date -u +%H:%M:%S))"; }
need() {
    command -v "$1" >/dev/null || { echo "build.sh: $1 is missing: $2" >&2; exit 1; }
}
need cargo "install Rust with rustup"
need cargo-deb "cargo install cargo-deb --locked"
need aarch64-linux-gnu-gcc "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
need arm-linux-gnueabihf-gcc "apt-get install gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
need musl-gcc "apt-get install musl-tools"
[ -n "${SKIP_OCI:-}" ] || need buildah "apt-get install buildah"

if command -v rustup >/dev/null; then
    rustup target add "${TARGETS[@]}" >/dev/null
fi

mkdir -p "$DIST_DIR"
# Only our own files go: DIST_DIR may be a directory that holds other things.
rm -f "$DIST_DIR"/peat-sidecar[-_]* "$DIST_DIR/SHA256SUMS"

# One cargo run for all targets: host build scripts and proc macros are built once,
# and the (single-threaded) fat-LTO links of the targets run side by side.
step "release build: ${TARGETS[*]}"
t0=$(date +%s)
target_args=()
for t in "${TARGETS[@]}"; do target_args+=(--target "$t"); done
cargo build --locked --release "${target_args[@]}"
echo "release build took $(( $(date +%s) - t0 ))s"

for t in "${TARGETS[@]}"; do
    bin=${CARGO_TARGET_DIR:-target}/$t/release/peat-sidecar
    cp "$bin" "$DIST_DIR/peat-sidecar-$version-${SHORT[$t]}"
    printf '%-32s %9d bytes\n' "$t" "$(stat -c %s "$bin")"
done

step ".deb packages"
for t in "${TARGETS[@]}"; do
    # --no-build: package the binary built above; --no-strip: the release profile
    # strips already (strip = true).
    # The armhf variant states the real glibc floor (see Cargo.toml); the static
    # builds have no shared-library dependency at all.
    variant=()
    [ "${DEB_ARCH[$t]}" = armhf ] && variant=(--variant armhf)
    if ! out=$(cargo deb --target "$t" --no-build --no-strip "${variant[@]}" --output "$DIST_DIR/" 2>&1); then
        echo "$out" >&2
        echo "build.sh: cargo deb failed for $t" >&2
        exit 1
    fi
    # cargo-deb warns that a static binary has no $auto dependencies: expected.
    grep -v -e 'Failed to find dependency specification' -e 'No \$auto deps for' -e '\.deb$' <<<"$out" >&2 || true
done
ls "$DIST_DIR"/*.deb

if [ -z "${SKIP_OCI:-}" ]; then
    step "OCI image (buildah, vfs, chroot isolation)"
    ctx=$(mktemp -d /tmp/peat-oci.XXXXXX)
    # buildah keeps its own storage under $ctx, so nothing is left in
    # /var/lib/containers and parallel builds do not meet.
    cleanup_oci() {
        buildah --root "$ctx/storage" --runroot "$ctx/run" --storage-driver vfs \
            rm --all >/dev/null 2>&1 || true
        rm -rf "$ctx"
    }
    trap cleanup_oci EXIT
    mkdir -p "$ctx/context/rootfs/etc" "$ctx/context/rootfs/data"
    printf 'root:x:0:0:root:/:/sbin/nologin\npeat-sidecar:x:10001:10001:peat-sidecar:/data:/sbin/nologin\n' \
        >"$ctx/context/rootfs/etc/passwd"
    printf 'root:x:0:\npeat-sidecar:x:10001:\n' >"$ctx/context/rootfs/etc/group"
    for t in "${!OCI_ARCH[@]}"; do
        mkdir -p "$ctx/context/bin/${OCI_ARCH[$t]}"
        cp "${CARGO_TARGET_DIR:-target}/$t/release/peat-sidecar" "$ctx/context/bin/${OCI_ARCH[$t]}/"
    done
    platforms=$(for a in "${OCI_ARCH[@]}"; do printf 'linux/%s,' "$a"; done)
    bah=(buildah --root "$ctx/storage" --runroot "$ctx/run" --storage-driver vfs)
    image="localhost/peat-sidecar:$version"
    "${bah[@]}" bud --quiet --isolation chroot --platform "${platforms%,}" \
        --timestamp 0 --manifest "$image" -f packaging/oci/Containerfile "$ctx/context" >/dev/null
    "${bah[@]}" manifest push --quiet --all "$image" \
        "oci-archive:$DIST_DIR/peat-sidecar-$version-oci.tar:$version"
    cleanup_oci
    trap - EXIT
    ls -l "$DIST_DIR/peat-sidecar-$version-oci.tar"
fi

step "checksums"
(cd "$DIST_DIR" && sha256sum -- * >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS && cat SHA256SUMS)
