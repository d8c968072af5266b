#!/bin/sh
# Install what the lab needs: capture/firewall tools, and the REAL client drivers it exercises.
# Everything comes from the ordinary registries (Debian apt, PyPI, npm). Needs root for apt.
# Python drivers go into samples/lab/out/venv (git-ignored) so they never touch the project venv.
set -eu
cd "$(dirname "$0")"
LAB="$(pwd)"

need=""
for p in iproute2 ethtool tcpdump nftables freetds-bin tshark; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
    apt-get update -qq
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi

mkdir -p out
[ -x out/venv/bin/python ] || python3 -m venv out/venv
out/venv/bin/python -m pip install -q --upgrade pip
# cryptography: the lab's own self-signed certificate. The rest are the drivers under test.
out/venv/bin/python -m pip install -q cryptography pyopenssl python-tds pymssql mssql-python
# An old driver that ignores the routing ENVCHANGE, for redirect_ignored and the cleartext
# routing scenarios: python-tds 1.9.1, the last release before routing support (1.10.0).
[ -x out/venv-pytds19/bin/python ] || python3 -m venv out/venv-pytds19
out/venv-pytds19/bin/python -m pip install -q --upgrade pip
out/venv-pytds19/bin/python -m pip install -q python-tds==1.9.1 six==1.17.0 pyopenssl

if command -v npm >/dev/null 2>&1; then
    (cd drivers && npm install --no-audit --no-fund --silent)
    # tedious 1.0.0, pinned in drivers/legacy/package.json: no routing support. Installed apart
    # (git-ignored out/node-legacy, no lock file) so it never mixes with today's tedious.
    mkdir -p out/node-legacy
    cp drivers/legacy/package.json out/node-legacy/package.json
    (cd out/node-legacy && npm install --no-audit --no-fund --no-package-lock --silent)
fi
echo "lab install done: $LAB/out/venv, $LAB/out/venv-pytds19, $LAB/drivers/node_modules," \
    "$LAB/out/node-legacy"
