#!/usr/bin/env bash
# Tests of the multi-arch OCI image in dist/: the index and each image's config
# (skopeo), the unpacked root (umoci), its binaries running from the unpacked roots in
# two network namespaces (amd64 natively as the image's user, arm64 under qemu), and,
# where a Docker engine answers, the image itself: two containers on one user-defined
# network that connect. Everything created here is named pk-* and removed at the end.
source "$(dirname "$0")/lib.sh"

IMG=localhost/peat-sidecar-pk:test

work=$(mktemp -d /tmp/pk-oci.XXXXXX)
chmod 755 "$work"
PIDS=()
docker_cleanup() {
    docker rm -f pk-c1 pk-c2 >/dev/null 2>&1 || true
    docker volume rm pk-c1-data pk-c2-data >/dev/null 2>&1 || true
    docker network rm pk-net >/dev/null 2>&1 || true
    docker rmi "$IMG" >/dev/null 2>&1 || true
}
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    lan_down
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then docker_cleanup; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== image index and configs"
[ -f "$OCI_TAR" ] || { fail "$OCI_TAR exists"; summary oci; }
ref=oci-archive:$OCI_TAR:$VERSION
index=$(skopeo inspect --raw "$ref")
archs=$(python3 -c 'import json,sys; i=json.loads(sys.argv[1]); print(" ".join(sorted(m["platform"]["os"]+"/"+m["platform"]["architecture"] for m in i["manifests"])))' "$index")
check "index holds linux/amd64 and linux/arm64 ($archs)" test "$archs" = "linux/amd64 linux/arm64"
for arch in amd64 arm64; do
    cfg=$(skopeo inspect --config --override-os linux --override-arch "$arch" "$ref")
    check "$arch: config architecture" python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["architecture"]==sys.argv[2] else 1)' "$cfg" "$arch"
    check "$arch: entrypoint is peat-sidecar run" python3 -c 'import json,sys; c=json.loads(sys.argv[1])["config"]; sys.exit(0 if c["Entrypoint"]==["/usr/bin/peat-sidecar","run"] else 1)' "$cfg"
    check "$arch: user is 10001 (not root)" python3 -c 'import json,sys; c=json.loads(sys.argv[1])["config"]; sys.exit(0 if c.get("User")=="10001:10001" else 1)' "$cfg"
    check "$arch: /data is a volume" python3 -c 'import json,sys; c=json.loads(sys.argv[1])["config"]; sys.exit(0 if "/data" in c.get("Volumes",{}) else 1)' "$cfg"
    check "$arch: env PEAT_SIDECAR_DATA_DIR=/data and PEAT_SIDECAR_LISTEN" python3 -c 'import json,sys; e=json.loads(sys.argv[1])["config"]["Env"]; sys.exit(0 if "PEAT_SIDECAR_DATA_DIR=/data" in e and any(x.startswith("PEAT_SIDECAR_LISTEN=") for x in e) else 1)' "$cfg"
done

echo "== unpacked roots"
declare -A RF
for arch in amd64 arm64; do
    skopeo copy -q --override-os linux --override-arch "$arch" "$ref" "oci:$work/oci-$arch:img"
    umoci unpack --image "$work/oci-$arch:img" "$work/bundle-$arch" >/dev/null
    chmod 755 "$work/bundle-$arch" # umoci makes it 0700; user 10001 must reach the root
    RF[$arch]=$work/bundle-$arch/rootfs
    r=${RF[$arch]}
    files=$(cd "$r" && find . -mindepth 1 | sort | tr '\n' ' ')
    check "$arch: root holds only the binary, passwd, group and /data ($files)" \
        test "$files" = "./data ./etc ./etc/group ./etc/passwd ./usr ./usr/bin ./usr/bin/peat-sidecar "
    check "$arch: binary is static" bash -c 'file "$1" | grep -q "statically linked\|static-pie"' _ "$r/usr/bin/peat-sidecar"
    check "$arch: /data is owned by 10001" test "$(stat -c %u:%g "$r/data")" = "10001:10001"
    check "$arch: passwd names user 10001" grep -q '^peat-sidecar:x:10001:10001:' "$r/etc/passwd"
done
check "arm64 root holds an aarch64 binary" bash -c 'file "$1" | grep -q aarch64' _ "${RF[arm64]}/usr/bin/peat-sidecar"

echo "== the unpacked images run in network namespaces ($DISCOVERY discovery)"
lan_up 2
envs=(PEAT_SIDECAR_DATA_DIR=/data PEAT_SIDECAR_BIND=0.0.0.0:9470 PEAT_SIDECAR_LISTEN=tcp://127.0.0.1:50051 RUST_LOG=info)
# node 1: the amd64 root, chrooted, as the image's user, with the image's env
in_amd64() { ip netns exec pk-n1 env -i "${envs[@]}" /usr/sbin/chroot --userspec=10001:10001 "${RF[amd64]}" /usr/bin/peat-sidecar "$@"; }
id1=$(ip netns exec pk-n1 env -i "${envs[@]}" /usr/sbin/chroot --userspec=10001:10001 "${RF[amd64]}" /usr/bin/peat-sidecar id || true)
id2=$(ip netns exec pk-n2 env -i /usr/bin/setpriv --reuid=10001 --regid=10001 --clear-groups "$(command -v qemu-aarch64)" "${RF[arm64]}/usr/bin/peat-sidecar" id --data-dir "${RF[arm64]}/data" || true)
check "amd64 image creates its key in /data as user 10001" test -s "${RF[amd64]}/data/secret.key"
check "arm64 image binary creates its key" grep -Eqx '[0-9a-f]{64}' <<<"$id2"
if [ "$DISCOVERY" = mdns ]; then d1=(--discovery-mode mdns); d2=(--discovery-mode mdns)
else d1=(--peer "$id2@10.87.0.2:9470"); d2=(--peer "$id1@10.87.0.1:9470"); fi
# Started without the functions' subshells, so that $! is the sidecar itself (ip, env,
# chroot and setpriv all exec) and SIGTERM reaches it.
ip netns exec pk-n1 env -i "${envs[@]}" /usr/sbin/chroot --userspec=10001:10001 "${RF[amd64]}" \
    /usr/bin/peat-sidecar run --app-id pk-oci "${d1[@]}" >"$work/log1" 2>&1 &
PIDS+=($!)
ip netns exec pk-n2 env -i "${envs[@]}" PEAT_SIDECAR_DATA_DIR="${RF[arm64]}/data" \
    /usr/bin/setpriv --reuid=10001 --regid=10001 --clear-groups "$(command -v qemu-aarch64)" \
    "${RF[arm64]}/usr/bin/peat-sidecar" run --app-id pk-oci "${d2[@]}" >"$work/log2" 2>&1 &
PIDS+=($!)
if wait_until 30 in_amd64 status; then ok "amd64 root answers status (chrooted, default API address)"
else fail "amd64 root answers status"; cat "$work/log1"; fi
mesh2() { peers_connected pk-n1 50051 "$id2" && peers_connected pk-n2 50051 "$id1"; }
if wait_until 60 mesh2; then ok "amd64 and arm64 image binaries connect"
else fail "amd64 and arm64 image binaries connect within 60 s"; tail -n 20 "$work/log1" "$work/log2"; fi
for idx in 0 1; do
    stop_pid "${PIDS[$idx]}"
    check "node $((idx + 1)) exits 0 on SIGTERM (got $STOP_RC)" test "$STOP_RC" = 0
done
PIDS=()
lan_down

echo "== docker: the image itself, two containers on one network"
if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
    echo "    no Docker engine answers here: skipped (the unpacked-root test above ran)"
else
    docker_cleanup
    skopeo copy -q --override-os linux --override-arch amd64 "$ref" "docker-archive:$work/img.tar:$IMG"
    check "docker load" bash -c 'docker load -i "$1" >/dev/null' _ "$work/img.tar"
    docker network create pk-net >/dev/null
    ids=()
    for c in pk-c1 pk-c2; do
        docker volume create "$c-data" >/dev/null
        # A fresh named volume takes /data's owner and mode from the image.
        ids+=("$(docker run --rm -v "$c-data:/data" --entrypoint /usr/bin/peat-sidecar "$IMG" id)")
    done
    check "key created in a volume by the image's user" grep -Eqx '[0-9a-f]{64}' <<<"${ids[1]}"
    if [ "$DISCOVERY" = mdns ]; then e1=(-e PEAT_SIDECAR_DISCOVERY_MODE=mdns); e2=(-e PEAT_SIDECAR_DISCOVERY_MODE=mdns)
    else e1=(-e "PEAT_SIDECAR_PEERS=${ids[1]}@pk-c2:9470"); e2=(-e "PEAT_SIDECAR_PEERS=${ids[0]}@pk-c1:9470"); fi
    docker run -d --name pk-c1 --network pk-net -v pk-c1-data:/data -e PEAT_SIDECAR_APP_ID=pk-docker "${e1[@]}" "$IMG" >/dev/null
    docker run -d --name pk-c2 --network pk-net -v pk-c2-data:/data -e PEAT_SIDECAR_APP_ID=pk-docker "${e2[@]}" "$IMG" >/dev/null
    dpeers() { docker exec "$1" /usr/bin/peat-sidecar peers --json 2>/dev/null | python3 -c 'import json,sys; p=json.load(sys.stdin); sys.exit(0 if any(x["endpoint_id"]==sys.argv[1] and x["state"]=="connected" for x in p) else 1)' "$2"; }
    dmesh() { dpeers pk-c1 "${ids[1]}" && dpeers pk-c2 "${ids[0]}"; }
    if wait_until 60 dmesh; then ok "two containers on pk-net connect"
    else fail "two containers on pk-net connect within 60 s"; docker logs pk-c1 2>&1 | tail -n 20; docker logs pk-c2 2>&1 | tail -n 20; fi
    if [ "$DISCOVERY" = mdns ]; then
        dsrc() { docker exec "$1" /usr/bin/peat-sidecar peers --json 2>/dev/null | python3 -c 'import json,sys; p=json.load(sys.stdin); sys.exit(0 if any(x["endpoint_id"]==sys.argv[1] and "mdns" in x["sources"] for x in p) else 1)' "$2"; }
        # The one that starts second finds the first by its one-shot query and dials at
        # once, so the first can hold the connection (inbound, no source yet) a moment
        # before its own browse resolves the newcomer's announcement; new nodes announce
        # again at 5 s and 11 s.
        for pair in "pk-c1 ${ids[1]} pk-c2" "pk-c2 ${ids[0]} pk-c1"; do
            read -r c want other <<<"$pair"
            if wait_until 20 dsrc "$c" "$want"; then ok "$c found $other through mdns"
            else fail "$c found $other through mdns within 20 s"; docker exec "$c" /usr/bin/peat-sidecar peers 2>&1; docker logs "$c" 2>&1 | tail -n 30; fi
        done
    fi
    check "container runs as 10001" test "$(docker exec pk-c1 /usr/bin/peat-sidecar status --json >/dev/null && docker inspect -f '{{.Config.User}}' pk-c1)" = 10001:10001
    docker stop -t 20 pk-c1 >/dev/null
    check "container exits 0 on docker stop (SIGTERM)" test "$(docker inspect -f '{{.State.ExitCode}}' pk-c1)" = 0
    check "its log says it stopped" bash -c 'docker logs pk-c1 2>&1 | grep -q stopped'
    docker_cleanup
    check "containers, network, volumes and image removed" bash -c '! docker ps -a --format "{{.Names}}" | grep -q "^pk-c" && ! docker network ls --format "{{.Name}}" | grep -qx pk-net && ! docker image inspect "$1" >/dev/null 2>&1' _ "$IMG"
fi

summary "oci"
