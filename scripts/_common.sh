# Shared by scripts/quickstart and scripts/test: make sure Debian has what we need, then a venv.
# Sourced, not run. Installs system packages only when they are missing.

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

APT_UPDATED=""
apt_install() {
    # apt_install PACKAGE... : install the Debian packages not yet installed.
    missing=""
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    [ -z "$missing" ] && return 0
    if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
    # tshark asks whether non-root users may capture; answer "no" without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | as_root debconf-set-selections
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}

make_venv() {
    # make_venv EXTRAS : .venv with tdslens installed editable (EXTRAS e.g. "[test]" or "").
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".$1"
}
