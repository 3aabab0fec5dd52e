#!/usr/bin/env bash
# Installs the Debian and Python packages listed in scripts/apt-packages.txt and
# scripts/pip-packages.txt, skipping what is there already.
set -euo pipefail
cd "$(dirname "$0")/../.."
mapfile -t apt_pkgs < <(grep -v '^\s*#' scripts/apt-packages.txt | awk 'NF{print $1}')
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mapfile -t pip_pkgs < <(grep -v '^\s*#' scripts/pip-packages.txt | awk 'NF{print $1}')
if [ ${#pip_pkgs[@]} -gt 0 ]; then
    python3 -m pip install -q --disable-pip-version-check "${pip_pkgs[@]}"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
