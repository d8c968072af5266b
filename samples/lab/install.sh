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

if command -v npm >/dev/null 2>&1; then
    (cd drivers && npm install --no-audit --no-fund --silent)
fi
echo "lab install done: $LAB/out/venv, $LAB/drivers/node_modules"
