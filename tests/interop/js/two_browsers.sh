#!/usr/bin/env bash
# Chromium <-> Chromium interop through `meshcall serve`, both browsers running the official
# @metered-ca/realtime 1.2.0 SDK. Everything runs inside ONE loopback-only network namespace:
# when called outside one (as root) the script re-executes itself under `unshare -n`; when
# already inside one (e.g. from scripts/test or a cargo test there) it runs directly.
#
#   tests/interop/js/setup.sh                       # once, outside the namespace (apt + npm)
#   tests/interop/js/two_browsers.sh [--no-reconnect] [--keep-logs]
#
# Environment: MESHCALL (server binary, default <repo>/target/debug/meshcall),
#   MESHCALL_INTEROP_JS_DIR (node_modules cache, default ~/.cache/meshcall/interop-js),
#   MESHCALL_CHROMIUM (default /usr/bin/chromium), MESHCALL_INTEROP_LOG_DIR (keep logs there),
#   MESHCALL_INTEROP_ATTEMPTS (default 2: a failed run is retried once in a fresh room).
# Arguments other than --keep-logs go to two-browsers.mjs (--no-reconnect, --trace,
#   --strict-sdk-metadata, --dc MODE, --dc-alice MODE, --dc-bob MODE, --timeout-ms N).
# Output: PASS/FAIL lines, TIMING lines, and a final `N passed, M failed`; exit 0 only if all passed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

only_loopback() {
    # Every interface in this namespace is `lo` (netlink view, not /sys which may be the host's).
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
modules="${MESHCALL_INTEROP_JS_DIR:-$HOME/.cache/meshcall/interop-js}"
chromium="${MESHCALL_CHROMIUM:-/usr/bin/chromium}"

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
[ -x "$chromium" ] || missing="$missing chromium ($chromium);"
[ -f "$modules/node_modules/@metered-ca/realtime/dist/index.mjs" ] || missing="$missing SDK in $modules (run $here/setup.sh);"
[ -d "$modules/node_modules/playwright-core" ] || missing="$missing playwright-core in $modules;"
command -v node >/dev/null || missing="$missing node;"
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
    logs="$(mktemp -d -t meshcall-interop-js.XXXXXX)"
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
    port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$logs/server.log" | head -n 1)"
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

# Chromium <-> Chromium has a known client-side glare race (about 1 join in 10 the pair never
# connects); a failed attempt is shown with an "attempt N: " prefix and run again in a
# fresh room. A server fault fails every attempt.
attempts="${MESHCALL_INTEROP_ATTEMPTS:-2}"
rc=1
for attempt in $(seq 1 "$attempts"); do
    room="interop-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    tok() { "$meshcall" token --secret "$secret" --kid "$kid" --sub "$1" --channel "$room" --name "$2" --ttl 600; }
    alice_token="$(tok alice Alice)"
    bob_token="$(tok bob Bob)"
    dir="$logs/attempt$attempt"
    mkdir -p "$dir"
    set +e
    MESHCALL_INTEROP_JS_DIR="$modules" MESHCALL_CHROMIUM="$chromium" \
        node "$here/two-browsers.mjs" --server "ws://127.0.0.1:$port" --room "$room" \
        --alice-token "$alice_token" --bob-token "$bob_token" --log-dir "$dir" "${runner_args[@]}" \
        >"$dir/result.txt" 2>"$dir/runner.stderr"
    rc=$?
    set -e
    if [ "$rc" -eq 0 ] || [ "$attempt" -eq "$attempts" ]; then
        cat "$dir/result.txt"
        [ "$attempt" -gt 1 ] && echo "INFO result of attempt $attempt of $attempts"
        break
    fi
    sed "s/^/attempt $attempt: /" "$dir/result.txt"
    keep_logs=1
done
if [ "$rc" -ne 0 ]; then
    keep_logs=1
    echo "--- server log (last 30 lines) ---" >&2
    tail -n 30 "$logs/server.log" >&2
fi
exit "$rc"
