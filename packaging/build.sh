#!/usr/bin/env bash
# Builds release artifacts of peat-sidecar into dist/ (or $DIST_DIR): for each target a
# release binary and its .deb (cargo-deb), then SHA256SUMS over what dist/ holds.
#
#     packaging/build.sh                  # this machine's architecture only
#     packaging/build.sh arm64            # a tablet or a Raspberry Pi (64-bit), on a laptop
#     packaging/build.sh aarch64-unknown-linux-musl armhf   # targets or Debian arches
#     packaging/build.sh all              # what CI builds: all three, and the OCI image
#
# Targets: x86_64-unknown-linux-musl (amd64, static), aarch64-unknown-linux-musl
# (arm64, static) and armv7-unknown-linux-gnueabihf (armhf, glibc >= 2.34). `all` also
# builds the multi-arch OCI image (linux/amd64 and linux/arm64) as an oci-archive with
# buildah, without a container engine; SKIP_OCI=1 leaves it out.
#
# Needs rustup, cargo-deb, and per target the C cross compiler of .cargo/config.toml;
# a missing tool is named with the command that installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DIST_DIR=${DIST_DIR:-$root/dist}
ALL=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
# target triple -> Debian architecture, and the OCI architecture for the static ones.
declare -A DEB_ARCH=([x86_64-unknown-linux-musl]=amd64 [aarch64-unknown-linux-musl]=arm64 [armv7-unknown-linux-gnueabihf]=armhf)
declare -A OCI_ARCH=([x86_64-unknown-linux-musl]=amd64 [aarch64-unknown-linux-musl]=arm64)
declare -A SHORT=([x86_64-unknown-linux-musl]=x86_64-linux-musl [aarch64-unknown-linux-musl]=aarch64-linux-musl [armv7-unknown-linux-gnueabihf]=armv7-linux-gnueabihf)
# The C compiler each target needs (.cargo/config.toml) and the Debian packages that
# bring it.
declare -A CC_OF=([x86_64-unknown-linux-musl]=musl-gcc [aarch64-unknown-linux-musl]=aarch64-linux-gnu-gcc [armv7-unknown-linux-gnueabihf]=arm-linux-gnueabihf-gcc)
declare -A CC_PKGS=([x86_64-unknown-linux-musl]="musl-tools" [aarch64-unknown-linux-musl]="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" [armv7-unknown-linux-gnueabihf]="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross")

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

# The target of this machine's architecture.
host_target() {
    case "$(uname -m)" in
        x86_64) echo x86_64-unknown-linux-musl ;;
        aarch64 | arm64) echo aarch64-unknown-linux-musl ;;
        armv7l | armv7 | armhf) echo armv7-unknown-linux-gnueabihf ;;
        *) echo "build.sh: no release target for $(uname -m); name one of: ${ALL[*]}" >&2; exit 2 ;;
    esac
}

TARGETS=()
OCI=
[ $# -gt 0 ] || set -- "$(host_target)"
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage ;;
        all) TARGETS+=("${ALL[@]}"); [ -n "${SKIP_OCI:-}" ] || OCI=1 ;;
        amd64 | x86_64) TARGETS+=(x86_64-unknown-linux-musl) ;;
        arm64 | aarch64) TARGETS+=(aarch64-unknown-linux-musl) ;;
        armhf | armv7) TARGETS+=(armv7-unknown-linux-gnueabihf) ;;
        *)
            [ -n "${DEB_ARCH[$arg]:-}" ] || {
                echo "build.sh: unknown target '$arg'; one of: ${ALL[*]}, amd64, arm64, armhf, all" >&2
                exit 2
            }
            TARGETS+=("$arg")
            ;;
    esac
done
# Each target once, in the order given.
mapfile -t TARGETS < <(printf '%s\n' "${TARGETS[@]}" | awk '!seen[$0]++')

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "build.sh: cannot read the version from Cargo.toml" >&2; exit 1; }

step() { echo "--- $* ($(date -u +%H:%M:%S))"; }
missing=()
need() {
    command -v "$1" >/dev/null || missing+=("$1: $2")
}
need cargo "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
need rustup "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
need cargo-deb "cargo install cargo-deb --locked"
for t in "${TARGETS[@]}"; do
    need "${CC_OF[$t]}" "sudo apt-get install ${CC_PKGS[$t]}"
done
[ -z "$OCI" ] || need buildah "sudo apt-get install buildah (or SKIP_OCI=1 to leave out the image)"
if [ ${#missing[@]} -gt 0 ]; then
    echo "build.sh: cannot build ${TARGETS[*]}; missing:" >&2
    printf '  %s\n' "${missing[@]}" | sort -u >&2
    exit 1
fi

rustup target add "${TARGETS[@]}" >/dev/null

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

if [ -n "$OCI" ]; then
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
