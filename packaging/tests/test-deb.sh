#!/usr/bin/env bash
# Tests of the .deb packages in dist/: lintian, contents and modes, the env file
# against `run --help`, the systemd unit (verify, security score), and the maintainer
# scripts' install / upgrade / remove / purge semantics in a throwaway root: an overlay
# of this machine's root in a private mount namespace, so dpkg runs for real and nothing
# reaches the host. systemd is never started (no /run/systemd/system in the overlay, so
# the maintainer scripts skip systemctl).
source "$(dirname "$0")/lib.sh"
work=$(mktemp -d /tmp/pk-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT

declare -A WANT_FILE=([amd64]="x86-64" [arm64]="ARM aarch64" [armhf]="ARM, EABI5")

echo "== lintian and package contents"
for arch in amd64 arm64 armhf; do
    deb=$DIST/peat-sidecar_${VERSION}-1_${arch}.deb
    if [ ! -f "$deb" ]; then fail "$arch: $deb exists"; continue; fi
    out=$(lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'running with root privileges' || true)
    [ -z "$out" ] || echo "$out" | sed 's/^/    /'
    check "$arch: lintian reports no errors" bash -c '! grep -q "^E:" <<<"$1"' _ "$out"

    x=$work/$arch
    mkdir -p "$x/root" "$x/ctl"
    dpkg-deb -x "$deb" "$x/root"
    dpkg-deb -e "$deb" "$x/ctl"
    check "$arch: Architecture field" test "$(dpkg-deb -f "$deb" Architecture)" = "$arch"
    check "$arch: binary is for $arch" bash -c 'file -L "$1" | grep -q "$2"' _ "$x/root/usr/bin/peat-sidecar" "${WANT_FILE[$arch]}"
    # path:mode:owner of everything that must be there
    for spec in usr/bin/peat-sidecar:755 etc/default/peat-sidecar:644 \
        usr/lib/systemd/system/peat-sidecar.service:644 \
        usr/share/doc/peat-sidecar/copyright:644 usr/share/doc/peat-sidecar/changelog.Debian.gz:644; do
        f=${spec%%:*} m=${spec##*:}
        line=$(dpkg-deb -c "$deb" | awk -v f="./$f" '$6==f')
        perm=$(echo "$line" | awk '{print $1}')
        want=$(python3 -c 'import stat,sys; print(stat.filemode(int(sys.argv[1],8)|0o100000))' "$m")
        check "$arch: $f is $want root/root" bash -c '[ "$1" = "$2" ] && grep -Eq " (0/0|root/root) " <<<"$3"' _ "$perm" "$want" "$line"
    done
    check "$arch: /etc/default/peat-sidecar is a conffile" grep -qx /etc/default/peat-sidecar "$x/ctl/conffiles"
    check "$arch: depends on adduser" bash -c 'dpkg-deb -f "$1" Depends | grep -q adduser' _ "$deb"
    for s in postinst prerm postrm; do
        check "$arch: $s is executable and valid sh" bash -c '[ -x "$1" ] && sh -n "$1"' _ "$x/ctl/$s"
    done
    check "$arch: postinst creates the system user" grep -q 'adduser --system' "$x/ctl/postinst"
    check "$arch: postinst enables the unit" grep -q 'deb-systemd-helper.*enable' "$x/ctl/postinst"
    check "$arch: postrm purges the state dir" grep -q 'rm -rf /var/lib/peat-sidecar' "$x/ctl/postrm"
done
armhf_dep=$(dpkg-deb -f "$DIST/peat-sidecar_${VERSION}-1_armhf.deb" Depends)
check "armhf: depends on libc6 (>= 2.34), the binary's glibc floor" grep -q 'libc6 (>= 2.34)' <<<"$armhf_dep"
newest=$(arm-linux-gnueabihf-objdump -T "$BIN_ARMV7" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)
check "armv7 binary needs at most GLIBC_2.34 (found $newest)" test "$newest" = GLIBC_2.34
for b in "$BIN_X86" "$BIN_ARM64"; do
    check "$(basename "$b") is static" bash -c 'file "$1" | grep -q "static"' _ "$b"
done

echo "== env file lists every variable of \`run --help\` with its default"
root=$work/amd64/root
envfile=$root/etc/default/peat-sidecar
help=$("$root/usr/bin/peat-sidecar" run --help | tr '\n' ' ' | tr -s ' ')
vars=$(grep -o 'PEAT_SIDECAR_[A-Z_]*' <<<"$help" | sort -u)
[ -n "$vars" ] || fail "run --help names no PEAT_SIDECAR_ variables"
for v in $vars; do
    if ! grep -q "^#$v=" "$envfile"; then fail "env file lists $v"; continue; fi
    def=$(python3 -c 'import re,sys; m=re.search(r"\[env: "+sys.argv[1]+r"=[^\]]*\] \[default: ([^\]]*)\]", sys.argv[2]); print(m.group(1) if m else "")' "$v" "$help")
    have=$(sed -n "s/^#$v=//p" "$envfile" | head -n1)
    if [ -z "$def" ] || [ "$def" = "$have" ]; then ok "env file lists $v${def:+ (default $def)}"
    else fail "env file default of $v is '$have', run --help says '$def'"; fi
done
check "no variable is set (all commented)" bash -c '! grep -qE "^[[:space:]]*[A-Z_]+=" "$1"' _ "$envfile"

echo "== systemd unit"
unit=$root/usr/lib/systemd/system/peat-sidecar.service
# verify needs the ExecStart binary: point it at the extracted one.
mkdir -p "$work/unit"
sed "s#/usr/bin/peat-sidecar#$root/usr/bin/peat-sidecar#" "$unit" >"$work/unit/peat-sidecar.service"
vout=$(cd "$work/unit" && systemd-analyze verify "$work/unit/peat-sidecar.service" 2>&1) && vrc=0 || vrc=$?
[ -z "$vout" ] || echo "$vout" | sed 's/^/    /'
check "systemd-analyze verify is clean" test "$vrc" = 0 -a -z "$vout"
exposure=$(systemd-analyze security --offline=yes "$work/unit/peat-sidecar.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for peat-sidecar.service: \([0-9.]*\).*/\1/p')
echo "    exposure: ${exposure:-?}"
check "systemd-analyze security exposure ${exposure:-?} <= 3.0" python3 -c 'import sys; sys.exit(0 if float(sys.argv[1] or 99) <= 3.0 else 1)' "${exposure:-}"
for want in 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' \
    'CapabilityBoundingSet=$' 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK$' \
    'SystemCallFilter=@system-service' 'StateDirectory=peat-sidecar' \
    'EnvironmentFile=-/etc/default/peat-sidecar' 'Restart=on-failure' 'User=peat-sidecar'; do
    check "unit has $want" grep -q "^$want" "$unit"
done

echo "== install, upgrade, remove, purge (amd64, in an overlay root)"
deb1=$DIST/peat-sidecar_${VERSION}-1_amd64.deb
# The upgrade: the same package as revision -2 (a new build would do the same).
mkdir -p "$work/up"
dpkg-deb -R "$deb1" "$work/up/pkg"
sed -i "s/^Version: .*/Version: ${VERSION}-2/" "$work/up/pkg/DEBIAN/control"
dpkg-deb -b -Zgzip "$work/up/pkg" "$work/up/peat-sidecar_${VERSION}-2_amd64.deb" >/dev/null
cp "$deb1" "$work/up/v1.deb"
cp "$work/up/peat-sidecar_${VERSION}-2_amd64.deb" "$work/up/v2.deb"

# Runs in a private mount namespace; prints "ok/FAIL ..." lines that are counted below.
cat >"$work/lifecycle.sh" <<'INNER'
set -u
r() { chroot "$M" "$@"; }
t() { local what=$1; shift; if "$@"; then echo "ok $what"; else echo "FAIL $what"; fi; }
mount -t tmpfs tmpfs "$W"
mkdir -p "$W/u" "$W/w" "$M"
mount -t overlay overlay -o "lowerdir=/,upperdir=$W/u,workdir=$W/w" "$M"
mkdir -p "$M/tmp/pk" && cp "$UP"/v1.deb "$UP"/v2.deb "$M/tmp/pk/"
t "no /run/systemd/system in the root (systemctl is skipped)" test ! -d "$M/run/systemd/system"
r dpkg --purge peat-sidecar >/dev/null 2>&1
r getent passwd peat-sidecar >/dev/null && r deluser --system --quiet peat-sidecar >/dev/null 2>&1
t "dpkg -i installs" r dpkg -i /tmp/pk/v1.deb
t "system user peat-sidecar exists" r getent passwd peat-sidecar
uid=$(r id -u peat-sidecar 2>/dev/null || echo 99999)
t "its uid ($uid) is a system uid" test "$uid" -lt 1000
t "its shell is nologin" sh -c "chroot '$M' getent passwd peat-sidecar | grep -q nologin"
t "unit enabled (multi-user.target.wants)" test -L "$M/etc/systemd/system/multi-user.target.wants/peat-sidecar.service"
t "binary runs in the root" r /usr/bin/peat-sidecar --version
# What StateDirectory= does at the first start, then the key as the service user makes it.
mkdir -p -m 0700 "$M/var/lib/peat-sidecar" && r chown peat-sidecar:peat-sidecar /var/lib/peat-sidecar
id1=$(r setpriv --reuid=peat-sidecar --regid=peat-sidecar --clear-groups /usr/bin/peat-sidecar id --data-dir /var/lib/peat-sidecar)
t "the service user creates the key" test -s "$M/var/lib/peat-sidecar/secret.key"
t "key mode is 0600" test "$(stat -c %a "$M/var/lib/peat-sidecar/secret.key")" = 600
sed -i 's/^#PEAT_SIDECAR_APP_ID=.*/PEAT_SIDECAR_APP_ID=edited-by-admin/' "$M/etc/default/peat-sidecar"
t "upgrade to -2 installs" r dpkg -i /tmp/pk/v2.deb
t "version is -2" sh -c "chroot '$M' dpkg-query -W -f='\${Version}' peat-sidecar | grep -q -- '-2\$'"
id2=$(r /usr/bin/peat-sidecar id --data-dir /var/lib/peat-sidecar)
t "upgrade keeps the identity key" test -n "$id1" -a "$id1" = "$id2"
t "upgrade keeps the edited env file" grep -q '^PEAT_SIDECAR_APP_ID=edited-by-admin' "$M/etc/default/peat-sidecar"
t "no .dpkg-new/.dpkg-dist left" sh -c "! ls '$M'/etc/default/peat-sidecar.dpkg-* 2>/dev/null"
t "dpkg -r removes" r dpkg -r peat-sidecar
t "remove drops the binary" test ! -e "$M/usr/bin/peat-sidecar"
t "remove keeps the key" test -s "$M/var/lib/peat-sidecar/secret.key"
t "remove keeps the env file" test -f "$M/etc/default/peat-sidecar"
t "dpkg -P purges" r dpkg -P peat-sidecar
t "purge removes the key and state dir" test ! -e "$M/var/lib/peat-sidecar"
t "purge removes the env file" test ! -e "$M/etc/default/peat-sidecar"
t "purge removes the system user" sh -c "! chroot '$M' getent passwd peat-sidecar"
t "purge removes the enable symlink" test ! -e "$M/etc/systemd/system/multi-user.target.wants/peat-sidecar.service"
t "dpkg forgets the package" sh -c "! chroot '$M' dpkg-query -W peat-sidecar >/dev/null 2>&1"
umount "$M"; umount "$W"
INNER
mkdir -p "$work/ovl"
res=$(W=$work/ovl M=$work/merged UP=$work/up unshare -m --propagation private bash "$work/lifecycle.sh" 2>&1 || true)
while IFS= read -r line; do
    case "$line" in
        "ok "*) ok "${line#ok }" ;;
        "FAIL "*) fail "${line#FAIL }" ;;
        *) echo "    $line" ;;
    esac
done <<<"$res"
check "lifecycle ran its checks" grep -q '^ok dpkg forgets\|^FAIL dpkg forgets' <<<"$res"
check "host has no peat-sidecar package" bash -c '! dpkg-query -W peat-sidecar >/dev/null 2>&1'
check "host has no /var/lib/peat-sidecar" test ! -e /var/lib/peat-sidecar

summary "deb"
