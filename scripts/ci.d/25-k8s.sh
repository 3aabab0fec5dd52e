#!/usr/bin/env bash
# Schema check of the Kubernetes manifests (packaging/kubernetes/), offline, with
# kubernetes-validate (PyPI). With kubectl present, the kustomization is rendered
# exactly as `kubectl apply -k` would and the result is checked; without it, every
# file is checked on its own and the kustomization must list them all.
set -euo pipefail
cd "$(dirname "$0")/../.."
# kubernetes-validate and PyYAML live in the test venv that 00-deps.sh makes.
venv=target/venv
[ -x "$venv/bin/kubernetes-validate" ] || {
    echo "$venv/bin/kubernetes-validate is missing: run scripts/test.sh 00-deps first" >&2
    exit 1
}
dir=packaging/kubernetes
# Oldest supported version (gRPC probes are GA since 1.27) and the newest schema.
versions=(1.27.0 1.37.0)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

if [ -z "${PEAT_CI_NO_KUBECTL:-}" ] && command -v kubectl >/dev/null 2>&1; then
    echo "rendering $dir with $(kubectl version --client 2>/dev/null | head -1)"
    kubectl kustomize "$dir" > "$out/rendered.yaml"
    files=("$out/rendered.yaml")
else
    echo "kubectl not found: validating each file and the kustomization's resource list"
    files=()
    for f in "$dir"/*.yaml; do
        [ "$(basename "$f")" = kustomization.yaml ] || files+=("$f")
    done
    "$venv/bin/python3" - "$dir" <<'PY'
import os, sys, yaml
d = sys.argv[1]
k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
listed = set(k.get("resources", []))
present = {f for f in os.listdir(d) if f.endswith(".yaml") and f != "kustomization.yaml"}
missing = sorted(listed - present)
unlisted = sorted(present - listed)
if missing or unlisted:
    sys.exit(f"kustomization.yaml: listed but absent {missing}; present but not listed {unlisted}")
print(f"kustomization.yaml lists all {len(present)} manifests")
PY
fi

for v in "${versions[@]}"; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "${files[@]}"
    echo "manifests pass the Kubernetes $v schema (strict)"
done

# What the daemon needs from its pod, checked in the manifests themselves.
all=$(cat "${files[@]}")
for needle in "clusterIP: None" "publishNotReadyAddresses: true" "PEAT_SIDECAR_LISTEN" \
    "tcp://0.0.0.0:50051" "PEAT_SIDECAR_SHARED_KEY_FILE" "secretName: peat-sidecar-shared-key" \
    "PEAT_SIDECAR_DISCOVERY_MODE" "grpc:"; do
    grep -qF -- "$needle" <<<"$all" || { echo "manifests lack: $needle" >&2; exit 1; }
done
echo "k8s manifests ok"
