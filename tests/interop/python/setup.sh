#!/usr/bin/env bash
# Creates (or refreshes) the venv for the Python WebRTC interop peer: the official SDK
# `metered-realtime[webrtc]` with aiortc/av, pinned in requirements.txt. Idempotent and quiet
# when already up to date. Run it OUTSIDE the loopback-only namespace (it needs PyPI).
#
#   tests/interop/python/setup.sh            # venv: $MESHCALL_PYVENV_WEBRTC or ~/.cache/meshcall/pyvenv-webrtc
#
# Prints the venv's python path on the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${MESHCALL_PYVENV_WEBRTC:-$HOME/.cache/meshcall/pyvenv-webrtc}"
req="$here/requirements.txt"
stamp="$venv/.meshcall-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

ok() {
    [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
        "$venv/bin/python" -c 'import metered_realtime, aiortc, av, aioice
assert metered_realtime.__version__ == "1.0.2"' 2>/dev/null
}

if ! ok; then
    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
            echo "setup.sh: python3 >= 3.10 is required (metered-realtime 1.0.2)" >&2
            exit 1
        fi
        mkdir -p "$(dirname "$venv")"
        if ! python3 -m venv "$venv" 2>/dev/null; then
            rm -rf "$venv"
            if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
                apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
            fi
            python3 -m venv "$venv"
        fi
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    ok_import="$("$venv/bin/python" -c 'import metered_realtime, aiortc, av; print(metered_realtime.__version__, aiortc.__version__, av.__version__)')"
    echo "setup.sh: installed metered-realtime/aiortc/av $ok_import into $venv" >&2
    echo "$want" >"$stamp"
fi
echo "$venv/bin/python"
