#!/usr/bin/env bash
# The release binaries: the ARM ones under qemu-user (--version, id, a real `run` that
# answers status), then a test LAN of three network namespaces where an x86_64, an
# aarch64 (qemu) and an armv7 (qemu) sidecar find each other and connect. The x86_64
# one runs as nobody with no capabilities and no_new_privs under strace, and its
# system calls and socket families are checked against the systemd unit's filters.
source "$(dirname "$0")/lib.sh"


work=$(mktemp -d /tmp/pk-bin.XXXXXX)
chmod 755 "$work" # the x86_64 node runs as nobody and must reach its data dir
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    lan_down
    rm -rf "$work"
}
trap cleanup EXIT

QEMU_ARM64=(qemu-aarch64)
QEMU_ARMV7=(qemu-arm -L /usr/arm-linux-gnueabihf)

echo "== binaries under qemu-user"
v=$("${QEMU_ARM64[@]}" "$BIN_ARM64" --version)
check "aarch64 --version ($v)" test "$v" = "peat-sidecar $VERSION"
v=$("${QEMU_ARMV7[@]}" "$BIN_ARMV7" --version)
check "armv7 --version ($v)" test "$v" = "peat-sidecar $VERSION"
for arch in x86 arm64 armv7; do
    case $arch in
        x86) run=("$BIN_X86") ;;
        arm64) run=("${QEMU_ARM64[@]}" "$BIN_ARM64") ;;
        armv7) run=("${QEMU_ARMV7[@]}" "$BIN_ARMV7") ;;
    esac
    d=$work/$arch
    id1=$("${run[@]}" id --data-dir "$d")
    id2=$("${run[@]}" id --data-dir "$d")
    check "$arch: id creates a key and prints a 64-hex endpoint id" grep -Eqx '[0-9a-f]{64}' <<<"$id1"
    check "$arch: id is stable across runs" test "$id1" = "$id2"
    check "$arch: key file is mode 0600" test "$(stat -c %a "$d/secret.key")" = 600
    declare "ID_$arch=$id1"
done
# The key format is the same on every architecture: the x86_64 binary reads the ARM key.
check "aarch64 key reads the same on x86_64" test "$("$BIN_X86" id --data-dir "$work/arm64")" = "$ID_arm64"

echo "== three architectures on a test LAN ($DISCOVERY discovery)"
lan_up 3
declare -A RUN IDS IP
RUN[1]="$BIN_X86"; RUN[2]="${QEMU_ARM64[*]} $BIN_ARM64"; RUN[3]="${QEMU_ARMV7[*]} $BIN_ARMV7"
IDS[1]=$ID_x86; IDS[2]=$ID_arm64; IDS[3]=$ID_armv7
NAME=([1]=x86_64 [2]=aarch64 [3]=armv7)
DIRS=([1]="$work/x86" [2]="$work/arm64" [3]="$work/armv7")
chown -R 65534:65534 "$work/x86"
for i in 1 2 3; do IP[$i]=10.87.0.$i; done
discovery_args() { # discovery_args I
    if [ "$DISCOVERY" = mdns ]; then
        # qemu-user (7.2) refuses setsockopt(IP_MULTICAST_IF) with ENOPROTOOPT, so the
        # ARM nodes under qemu receive mDNS but cannot announce: they find the x86_64
        # node and dial it, the x86_64 node accepts. The two ARM nodes are therefore
        # given each other as a static peer; on real ARM hardware mdns works both ways.
        echo "--discovery-mode mdns"
        [ "$1" = 2 ] && printf -- '--peer %s@%s:9470 ' "${IDS[3]}" "${IP[3]}"
        return 0
    fi
    local j
    for j in 1 2 3; do [ "$j" = "$1" ] || printf -- '--peer %s@%s:9470 ' "${IDS[$j]}" "${IP[$j]}"; done
}
for i in 1 2 3; do
    args="run --data-dir ${DIRS[$i]} --bind 0.0.0.0:9470 --listen tcp://127.0.0.1:50051 --app-id pk-arch $(discovery_args "$i")"
    if [ "$i" = 1 ]; then
        # What the unit imposes, minus what needs systemd: an unprivileged user, an
        # empty capability set and no_new_privs. strace records the calls it makes.
        # shellcheck disable=SC2086
        ip netns exec pk-n1 strace -f -qq -s 256 -o "$work/trace" \
            setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
            --bounding-set=-all --inh-caps=-all \
            "$BIN_X86" $args >"$work/log1" 2>&1 &
    else
        # shellcheck disable=SC2086
        ip netns exec "pk-n$i" ${RUN[$i]} $args >"$work/log$i" 2>&1 &
    fi
    PIDS+=($!)
done
for i in 1 2 3; do
    if wait_until 30 ip netns exec "pk-n$i" "$BIN_X86" status --api tcp://127.0.0.1:50051; then
        ok "${NAME[$i]} answers status"
    else
        fail "${NAME[$i]} answers status within 30 s"; tail -n 20 "$work/log$i"
    fi
done
mesh() {
    local i j
    for i in 1 2 3; do for j in 1 2 3; do
        [ "$i" = "$j" ] || peers_connected "pk-n$i" 50051 "${IDS[$j]}" || return 1
    done; done
}
t0=$(date +%s)
if wait_until 60 mesh; then ok "full mesh x86_64 + aarch64 + armv7 in $(($(date +%s) - t0))s"
else
    fail "full mesh x86_64 + aarch64 + armv7 within 60 s"
    for i in 1 2 3; do ip netns exec "pk-n$i" "$BIN_X86" peers --api tcp://127.0.0.1:50051 || true; tail -n 20 "$work/log$i"; done
fi
if [ "$DISCOVERY" = mdns ]; then
    for i in 2 3; do
        check "${NAME[$i]} found x86_64 through mdns" bash -c 'ip netns exec "pk-n$1" "$2" peers --json --api tcp://127.0.0.1:50051 |
            python3 -c "import json,sys; p=json.load(sys.stdin); sys.exit(0 if any(x[\"endpoint_id\"]==sys.argv[1] and \"mdns\" in x[\"sources\"] for x in p) else 1)" "$3"' _ "$i" "$BIN_X86" "${IDS[1]}"
    done
fi
for i in 1 2 3; do
    st=$(ip netns exec "pk-n$i" "$BIN_X86" status --json --api tcp://127.0.0.1:50051 || echo '{}')
    check "${NAME[$i]} status: own id, 2 peers connected" python3 -c '
import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s.get("endpoint_id")==sys.argv[2] and s.get("connected_peers")==2 else 1)' "$st" "${IDS[$i]}"
done
check "x86_64 runs as nobody" bash -c 'ip netns pids pk-n1 | while read -r p; do
    [ "$(readlink /proc/$p/exe)" = "$1" ] && awk "/^Uid:/{print \$2}" /proc/$p/status; done | grep -qx 65534' _ "$BIN_X86"

# SIGTERM: each node says goodbye and exits 0 (the unit relies on it: KillSignal=SIGTERM).
sidecar_pid() { # the sidecar process (not strace/setpriv/ip) in namespace $1
    local p
    for p in $(ip netns pids "$1"); do
        case "$(readlink "/proc/$p/exe" 2>/dev/null)" in
            "$BIN_X86" | */qemu-aarch64 | */qemu-arm) echo "$p"; return ;;
        esac
    done
}
for i in 3 2 1; do
    p=$(sidecar_pid "pk-n$i")
    kill -TERM "$p" 2>/dev/null || true
    if timeout 20 tail --pid="$p" -f /dev/null; then ok "${NAME[$i]} stops on SIGTERM"; else fail "${NAME[$i]} stops on SIGTERM within 20 s"; fi
done
for idx in 0 1 2; do
    rc=0; wait "${PIDS[$idx]}" || rc=$?
    check "${NAME[$((idx + 1))]} exit code 0 after SIGTERM (got $rc)" test "$rc" = 0
done
PIDS=()
check "x86_64 log says it stopped" grep -q 'stopped' "$work/log1"

echo "== system calls against the unit's filters"
out=$(python3 "$(dirname "$0")/syscalls.py" "$work/trace" "$BIN_X86" "$work/x86" "$ROOT/packaging/deb/peat-sidecar.service" 2>&1) && src=0 || src=$?
echo "$out" | sed 's/^/    /'
check "calls, socket families and files pass the unit's filters and ProtectSystem/ProcSubset" test "$src" = 0
check "the trace covers UDP/QUIC (AF_INET) and netlink (interface watch)" \
    bash -c 'grep "^socket families:" <<<"$1" | grep -q AF_INET && grep "^socket families:" <<<"$1" | grep -q AF_NETLINK' _ "$out"

summary "binaries"
