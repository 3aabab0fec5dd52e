# Shared helpers of the packaging tests (sourced). Every test counts its checks with
# ok/fail; names of namespaces and links carry the prefix "pk" so that cleanup never
# touches anything another test or helper created.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIST=${DIST_DIR:-$ROOT/dist}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
BIN_X86=$DIST/peat-sidecar-$VERSION-x86_64-linux-musl
BIN_ARM64=$DIST/peat-sidecar-$VERSION-aarch64-linux-musl
BIN_ARMV7=$DIST/peat-sidecar-$VERSION-armv7-linux-gnueabihf
OCI_TAR=$DIST/peat-sidecar-$VERSION-oci.tar
# How the nodes of the multi-node tests find each other: `static` gives each node the
# others as --peer; `mdns` uses --discovery-mode mdns (the test LAN has the multicast
# route, docker's bridge floods multicast). PK_DISCOVERY=static for the static variant.
DISCOVERY=${PK_DISCOVERY:-mdns}
PASSED=0
FAILED=0

ok() { PASSED=$((PASSED + 1)); echo "  ok   $*"; }
fail() { FAILED=$((FAILED + 1)); echo "  FAIL $*"; }
check() { # check DESCRIPTION COMMAND...: ok if the command succeeds
    local what=$1; shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
summary() { # the plain closing line that CI reads; non-zero exit on any failure
    echo "$1: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

# wait_until SECONDS COMMAND...: polls every 0.2 s
wait_until() {
    local deadline=$(($(date +%s) + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# --- a test LAN of network namespaces: pk-lan holds the bridge, pk-nN are hosts ---
PK_NS=()
lan_up() { # lan_up N: hosts pk-n1..pk-nN with 10.87.0.I/24 on eth0
    lan_down
    ip netns add pk-lan
    ip -n pk-lan link add pkbr type bridge mcast_snooping 0
    ip -n pk-lan link set pkbr up
    ip -n pk-lan link set lo up
    local i
    for i in $(seq 1 "$1"); do
        ip netns add "pk-n$i"
        PK_NS+=("pk-n$i")
        ip -n "pk-n$i" link set lo up
        ip link add "pkv$i" netns "pk-n$i" type veth peer name "pkv${i}b" netns pk-lan
        ip -n "pk-n$i" link set "pkv$i" name eth0
        ip -n "pk-n$i" addr add "10.87.0.$i/24" dev eth0
        ip -n "pk-n$i" link set eth0 up
        # mdns libraries that do not pin the multicast interface need this route.
        ip -n "pk-n$i" route add 224.0.0.0/4 dev eth0
        ip -n pk-lan link set "pkv${i}b" master pkbr
        ip -n pk-lan link set "pkv${i}b" up
    done
    sleep 2 # IPv6 duplicate address detection
}
lan_down() {
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep -E '^pk-(n[0-9]+|lan)$' || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
}

# peers_connected NS API_PORT PEER_ID: the sidecar in NS lists PEER_ID as connected
peers_connected() {
    ip netns exec "$1" "$BIN_X86" peers --json --api "tcp://127.0.0.1:$2" 2>/dev/null |
        python3 -c 'import json,sys; p=json.load(sys.stdin); sys.exit(0 if any(x["endpoint_id"]==sys.argv[1] and x["state"]=="connected" for x in p) else 1)' "$3"
}

# stop_pid PID: SIGTERM, wait up to 20 s (then SIGKILL); the exit code lands in STOP_RC.
# PID must be a child of this shell (started with &, not inside $(...)).
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    timeout 20 tail --pid="$1" -f /dev/null || kill -9 "$1" 2>/dev/null || true
    STOP_RC=0
    wait "$1" 2>/dev/null || STOP_RC=$?
}
