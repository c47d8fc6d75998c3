#!/usr/bin/env bash
# Python <-> Python WebRTC interop through `meshcall serve`: two peers on the official Python SDK
# `metered-realtime[webrtc]` (aiortc) in one room. Everything runs inside ONE
# loopback-only network namespace: called outside one (as root) the script re-executes itself
# under `unshare -n`; already inside one (only `lo`), it runs directly.
#
#   tests/interop/python/setup.sh                 # once, OUTSIDE the namespace (PyPI)
#   tests/interop/python/two_python_peers.sh [--video a|b|both|none] [--rounds N] [--hold S]
#       [--timeout S] [--no-dc-rescue] [--keep-logs] [--debug]
#
# Default: peer a = alice/Alice (data only), peer b = bob/Bob (--video). alice < bob, so alice is
# the polite side and opens the data channel; bob (impolite) offers its camera first.
# Environment: MESHCALL (server binary, default <repo>/target/debug/meshcall),
#   MESHCALL_PYVENV_WEBRTC (venv, default ~/.cache/meshcall/pyvenv-webrtc),
#   MESHCALL_INTEROP_LOG_DIR (keep logs there).
# Output: PASS/FAIL lines, TIMING lines, and a final `N passed, M failed`; exit 0 only if all passed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

only_loopback() {
    local names
    names="$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//')" || return 1
    [ -n "$names" ] && [ "$names" = "lo" ]
}

if ! only_loopback; then
    if [ "${MESHCALL_INTEROP_IN_NETNS:-}" = 1 ]; then
        echo "FAIL netns: still not in a loopback-only namespace" && echo "0 passed, 1 failed"
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "FAIL netns: need root for 'unshare -n' (WebRTC must not see non-loopback interfaces)"
        echo "0 passed, 1 failed"
        exit 1
    fi
    export MESHCALL_INTEROP_IN_NETNS=1
    exec unshare -n -- bash -c 'ip link set lo up && exec bash "$0" "$@"' "${BASH_SOURCE[0]}" "$@"
fi
ip link set lo up 2>/dev/null || true

meshcall="${MESHCALL:-$root/target/debug/meshcall}"
venv="${MESHCALL_PYVENV_WEBRTC:-$HOME/.cache/meshcall/pyvenv-webrtc}"
py="$venv/bin/python"

keep_logs=0
runner_args=()
for a in "$@"; do
    case "$a" in
        --keep-logs) keep_logs=1 ;;
        *) runner_args+=("$a") ;;
    esac
done

missing=""
[ -x "$meshcall" ] || missing="$missing meshcall binary ($meshcall);"
if [ ! -x "$py" ] || ! "$py" -c 'import metered_realtime, aiortc, av' 2>/dev/null; then
    missing="$missing SDK venv $venv (run $here/setup.sh outside the namespace);"
fi
if [ -n "$missing" ]; then
    echo "FAIL prerequisites:$missing"
    echo "0 passed, 1 failed"
    exit 1
fi

if [ -n "${MESHCALL_INTEROP_LOG_DIR:-}" ]; then
    logs="$MESHCALL_INTEROP_LOG_DIR"
    mkdir -p "$logs"
    keep_logs=1
else
    logs="$(mktemp -d -t meshcall-interop-py.XXXXXX)"
fi

kid=sk_id_interop
secret="sk_secret_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$meshcall" serve --listen 127.0.0.1:0 --secret "$kid=$secret" 2>"$logs/server.log" >&2 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    if [ "$keep_logs" = 0 ]; then rm -rf "$logs"; else echo "logs kept in $logs" >&2; fi
}
trap cleanup EXIT

port=""
for _ in $(seq 1 100); do
    port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$logs/server.log" 2>/dev/null | head -n 1 || true)"
    [ -n "$port" ] && break
    if ! kill -0 "$server" 2>/dev/null; then break; fi
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "FAIL server-start: meshcall serve did not print 'listening on'"
    sed 's/^/  server: /' "$logs/server.log"
    echo "0 passed, 1 failed"
    exit 1
fi

room="pyinterop-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
tok() { "$meshcall" token --secret "$secret" --kid "$kid" --sub "$1" --channel "$room-*" --name "$2" --ttl 900; }
alice_token="$(tok alice Alice)"
bob_token="$(tok bob Bob)"

set +e
"$py" "$here/two_python_peers.py" --server "ws://127.0.0.1:$port" --room-prefix "$room" --python "$py" \
    --token-a "$alice_token" --token-b "$bob_token" --id-a alice --id-b bob --name-a Alice --name-b Bob \
    --log-dir "$logs" "${runner_args[@]}"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    keep_logs=1
    echo "--- server log (last 30 lines) ---" >&2
    tail -n 30 "$logs/server.log" >&2
fi
exit "$rc"
