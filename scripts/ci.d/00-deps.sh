#!/usr/bin/env bash
# Installs the Debian and Python packages listed in scripts/apt-packages.txt and
# scripts/pip-packages.txt, skipping what is there already. The Python packages go into
# a virtual environment, target/venv (never the system Python: Debian 12's refuses
# `pip install`, PEP 668); the tests run target/venv/bin/python3
# (tests/common/interop.rs) unless PEAT_TEST_PYTHON names another.
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
venv=target/venv
stamp=$venv/pip-packages.txt
if [ ${#pip_pkgs[@]} -gt 0 ] && ! cmp -s scripts/pip-packages.txt "$stamp"; then
    if [ ! -x "$venv/bin/python3" ]; then
        python3 -m venv "$venv" || {
            echo "cannot create $venv: install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        }
    fi
    echo "installing into $venv: ${pip_pkgs[*]}"
    "$venv/bin/python3" -m pip install -q --disable-pip-version-check "${pip_pkgs[@]}"
    cp scripts/pip-packages.txt "$stamp"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
