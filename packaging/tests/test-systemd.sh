#!/usr/bin/env bash
# The amd64 .deb under a booted systemd (issue 18). A Debian root file system made by
# mmdebstrap from Debian's packages is imported into Docker and booted with systemd as
# PID 1 in its own containers (never systemd on this machine's own file system: its
# tmpfiles run would empty the host's /tmp). In them: the .deb installs and starts the
# service (Type=notify), `peat-sidecar status` answers on the port and on the socket the
# unit configures, restart keeps the endpoint id, stop returns within 5 s with a watch
# client connected, a bad setting fails the unit with the reason in the journal, two
# containers on one Docker network find each other by mDNS, and purge removes the user,
# the state and the config.
#
# The root file system is cached as a tarball under /var/cache/peat-sidecar-ci/
# (PEAT_CI_CACHE=DIR elsewhere), keyed by suite and package list; Docker keeps the image
# imported from it. Containers and the network are named pksd-$$-* and removed on every
# exit. DEB=path overrides the package (default: dist/'s amd64 .deb).
source "$(dirname "$0")/lib.sh"
# Every step below is a check that counts; one failing step must not skip the rest.
set +e
t_stage=$(date +%s)

DEB=${DEB:-$DIST/peat-sidecar_${VERSION}-1_amd64.deb}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
INCLUDE=systemd,systemd-sysv,dbus,adduser,iproute2,procps
CACHE=${PEAT_CI_CACHE:-/var/cache/peat-sidecar-ci}
key=$(echo "$SUITE $MIRROR $INCLUDE minbase v1" | sha256sum | cut -c1-12)
TARBALL=$CACHE/rootfs-$SUITE-$key.tar
IMG=peat-ci-systemd:$key
TAG=pksd-$$
NET=$TAG-net
CONTAINERS=()

cleanup() {
    local c
    for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    docker network rm "$NET" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
    fail "a Docker engine answers (needed to boot systemd in a container)"
    summary systemd
fi
echo "== root file system ($SUITE, $INCLUDE)"
t0=$(date +%s)
if [ ! -s "$TARBALL" ]; then
    mkdir -p "$CACHE"
    # Older roots of other package lists would only fill the disk.
    rm -f "$CACHE"/rootfs-*.tar
    rm -rf "$TARBALL.tmp"
    if ! mmdebstrap --quiet --format=tar --variant=minbase --include="$INCLUDE" \
        "$SUITE" "$TARBALL.tmp" "$MIRROR"; then
        fail "mmdebstrap builds the root file system from $MIRROR"
        summary systemd
    fi
    mv "$TARBALL.tmp" "$TARBALL"
    echo "    built $TARBALL in $(($(date +%s) - t0))s"
else
    echo "    cached: $TARBALL"
fi
if ! docker image inspect "$IMG" >/dev/null 2>&1; then
    docker images --format '{{.Repository}}:{{.Tag}}' | grep '^peat-ci-systemd:' |
        xargs -r docker rmi >/dev/null 2>&1 || true
    if ! docker import -c 'CMD ["/lib/systemd/systemd"]' "$TARBALL" "$IMG" >/dev/null; then
        fail "docker import $TARBALL"
        summary systemd
    fi
fi
echo "    image $IMG ready after $(($(date +%s) - t0))s"
# PREPARE_ONLY=1: only the root file system and its image (scripts/ci.d/prep/30-package.sh
# makes them while the release build runs).
if [ -n "${PREPARE_ONLY:-}" ]; then
    summary systemd-prepare
    exit
fi
[ -f "$DEB" ] || { fail "$DEB exists"; summary systemd; }

docker network create "$NET" >/dev/null
# boot NAME: a container with systemd as PID 1 on $NET, booted to multi-user.
# Every capability and no seccomp/AppArmor profile, because the unit's sandbox
# (PrivateUsers=, ProtectSystem=, its own seccomp filter) needs systemd to create
# namespaces and mounts. Not --privileged: that asks for every capability, and Docker
# fails ("unable to apply caps") where its daemon lacks one (CAP_SYS_RESOURCE here).
# The container's cgroup namespace is private.
boot() {
    docker run -d --name "$1" --hostname "$1" --network "$NET" \
        --cap-add ALL --cap-drop SYS_RESOURCE \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --cgroupns=private --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
        -e container=docker --stop-signal SIGRTMIN+3 "$IMG" >/dev/null
    CONTAINERS+=("$1")
    wait_until 60 dx "$1" sh -c 'systemctl is-system-running | grep -Eq "running|degraded"'
}
dx() { # dx [-i] CONTAINER COMMAND...
    local i=()
    [ "$1" != -i ] || { i=(-i); shift; }
    local c=$1; shift
    docker exec "${i[@]}" "$c" "$@"
}
# status_id C [API]: the endpoint id that `peat-sidecar status` reports
status_id() {
    dx "$1" peat-sidecar status --json ${2:+--api "$2"} 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoint_id"])' 2>/dev/null
}
setting() { # setting C VAR VALUE: set (or add) VAR in /etc/default/peat-sidecar
    dx "$1" sed -i "/^#\?$2=/d" /etc/default/peat-sidecar
    dx "$1" sh -c "echo '$2=$3' >> /etc/default/peat-sidecar"
}
journal_tail() { dx "$1" journalctl -u peat-sidecar --no-pager -n 30 2>&1 | sed 's/^/    | /'; }
install_deb() { # through stdin: docker cp cannot write into the container's tmpfs /tmp
    dx -i "$1" sh -c 'cat > /tmp/peat-sidecar.deb' <"$DEB" &&
        dx "$1" dpkg -i /tmp/peat-sidecar.deb >/dev/null
}

A=$TAG-a
B=$TAG-b
echo "== boot and install ($A)"
t0=$(date +%s)
check "systemd boots in $A" boot "$A"
check "dpkg -i installs the .deb" install_deb "$A"
check "the service is active (Type=notify: READY=1 was sent)" \
    wait_until 30 dx "$A" systemctl is-active --quiet peat-sidecar
check "systemd shows the daemon's STATUS= line" wait_until 15 \
    sh -c "docker exec $A systemctl show -p StatusText --value peat-sidecar | grep -q 'known peers connected'"
check "the watchdog is on (WatchdogSec=30s)" \
    test "$(dx "$A" systemctl show -p WatchdogUSec --value peat-sidecar)" = 30s
id1=$(status_id "$A")
check "peat-sidecar status answers on the default port ($id1)" test ${#id1} = 64
echo "    booted and installed in $(($(date +%s) - t0))s"

echo "== restart, socket, metrics"
setting "$A" PEAT_SIDECAR_LISTEN unix:///run/peat-sidecar/api.sock
setting "$A" PEAT_SIDECAR_METRICS_LISTEN tcp://0.0.0.0:9464
check "systemctl restart succeeds" dx "$A" systemctl restart peat-sidecar
id2=$(status_id "$A" unix:///run/peat-sidecar/api.sock)
check "status answers on the unit's socket /run/peat-sidecar/api.sock" test ${#id2} = 64
check "restart keeps the endpoint id" test -n "$id1" -a "$id1" = "$id2"
ip_a=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$A")
check "/metrics answers from the container ($ip_a:9464)" wait_until 10 \
    sh -c "curl -sf http://$ip_a:9464/metrics | grep -q '^peat_sidecar_build_info'"
if command -v promtool >/dev/null; then
    check "promtool check metrics passes on the scrape" \
        bash -c "set -o pipefail; curl -sf http://$ip_a:9464/metrics | promtool check metrics"
fi

echo "== stop with a watch client connected"
dx "$A" sh -c 'peat-sidecar watch --api unix:///run/peat-sidecar/api.sock >/dev/null 2>&1 &'
check "the watch client runs" wait_until 10 dx "$A" pgrep -f 'peat-sidecar watch'
check "the service is active before the stop" dx "$A" systemctl is-active --quiet peat-sidecar
s0=$(date +%s%N)
dx "$A" systemctl stop peat-sidecar
took_ms=$((($(date +%s%N) - s0) / 1000000))
check "systemctl stop returns within 5 s (took ${took_ms} ms)" test "$took_ms" -lt 5000
check "the service stopped cleanly (inactive, not failed)" \
    sh -c "docker exec $A systemctl is-active peat-sidecar | grep -qx inactive"

echo "== a bad setting fails the unit, with the reason in the journal"
setting "$A" PEAT_SIDECAR_MAX_DIALS_PER_SEC 0
dx "$A" systemctl start peat-sidecar 2>/dev/null && fail "start with a bad setting fails" ||
    ok "start with a bad setting fails"
check "the unit is failed" wait_until 20 dx "$A" systemctl is-failed --quiet peat-sidecar
# Read whole before grep: under pipefail, grep -q closing the pipe early fails it.
journal=$(dx "$A" journalctl -u peat-sidecar --no-pager 2>&1)
# Settings errors name the variable the value came from, not the flag.
if grep -q "invalid value '0' for 'PEAT_SIDECAR_MAX_DIALS_PER_SEC" <<<"$journal"; then
    ok "journalctl -u peat-sidecar names the bad setting"
else
    fail "journalctl -u peat-sidecar names the bad setting"
    journal_tail "$A"
fi
dx "$A" sed -i '/^PEAT_SIDECAR_MAX_DIALS_PER_SEC=/d' /etc/default/peat-sidecar
dx "$A" systemctl reset-failed peat-sidecar
check "fixed, the unit starts again" dx "$A" systemctl start peat-sidecar

echo "== two containers find each other by mDNS"
check "systemd boots in $B" boot "$B"
check "dpkg -i installs the .deb in $B" install_deb "$B"
for c in "$A" "$B"; do
    setting "$c" PEAT_SIDECAR_DISCOVERY_MODE mdns
    dx "$c" systemctl restart peat-sidecar
done
idA=$(status_id "$A" unix:///run/peat-sidecar/api.sock)
idB=$(status_id "$B")
mdns_connected() { # mdns_connected C API PEER_ID
    dx "$1" peat-sidecar peers --json --api "$2" 2>/dev/null | python3 -c '
import json, sys
p = json.load(sys.stdin)
sys.exit(0 if any(x["endpoint_id"] == sys.argv[1] and x["state"] == "connected"
                  and "mdns" in x["sources"] for x in p) else 1)' "$3"
}
check "$A lists $B as connected, found by mdns" \
    wait_until 30 mdns_connected "$A" unix:///run/peat-sidecar/api.sock "$idB"
check "$B lists $A as connected, found by mdns" \
    wait_until 30 mdns_connected "$B" tcp://127.0.0.1:50051 "$idA"

echo "== watchdog ($B, WatchdogSec=4s in a runtime drop-in to keep the test short)"
dropin=/run/systemd/system/peat-sidecar.service.d
dx "$B" mkdir -p "$dropin"
dx "$B" sh -c "printf '[Service]\nWatchdogSec=4s\nTimeoutAbortSec=2s\n' > $dropin/50-test.conf"
dx "$B" systemctl daemon-reload
dx "$B" systemctl restart peat-sidecar
main_pid() { dx "$B" systemctl show -p MainPID --value peat-sidecar; }
pid1=$(main_pid)
sleep 10
check "the pings keep it running past 2 x WatchdogSec (pid $pid1)" \
    test "$pid1" != 0 -a "$(main_pid)" = "$pid1"
dx "$B" kill -STOP "$pid1"
restarted() { local p; p=$(main_pid); [ "$p" != 0 ] && [ "$p" != "$pid1" ] &&
    dx "$B" systemctl is-active --quiet peat-sidecar; }
check "a frozen daemon (SIGSTOP) is restarted by the watchdog" wait_until 40 restarted
journal=$(dx "$B" journalctl -u peat-sidecar --no-pager 2>&1)
check "the journal says why (Watchdog timeout)" grep -q "Watchdog timeout" <<<"$journal"

echo "== purge"
check "apt-get purge succeeds" dx "$A" apt-get purge -y -qq peat-sidecar
check "purge removes the user" sh -c "! docker exec $A getent passwd peat-sidecar"
check "purge removes the state (/var/lib/peat-sidecar)" sh -c "! docker exec $A test -e /var/lib/peat-sidecar"
check "purge removes the config (/etc/default/peat-sidecar)" sh -c "! docker exec $A test -e /etc/default/peat-sidecar"
check "no peat-sidecar process is left" sh -c "! docker exec $A pgrep -x peat-sidecar"

echo "test-systemd stage took $(($(date +%s) - t_stage))s"
summary systemd
