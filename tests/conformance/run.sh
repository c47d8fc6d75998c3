#!/usr/bin/env bash
# Start `meshcall serve` on a free loopback port, run the Python SDK conformance
# script against it, stop the server. Extra arguments go to the script
# (e.g. --only jwt_connect -v).
#
#   MESHCALL=target/debug/meshcall PYVENV=/root/.cache/meshcall/pyvenv tests/conformance/run.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
meshcall="${MESHCALL:-$root/target/debug/meshcall}"
pyvenv="${PYVENV:-/root/.cache/meshcall/pyvenv}"
py="$pyvenv/bin/python"

if [ ! -x "$py" ]; then
    python3 -m venv "$pyvenv"
    "$pyvenv/bin/pip" install -q -r "$here/requirements.txt"
fi

kid=sk_id_conformance
secret="sk_secret_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
key=pk_live_conformance
port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp -t meshcall-conformance.XXXXXX.log)"

"$meshcall" serve --listen "127.0.0.1:$port" --secret "$kid=$secret" --publishable-key "$key" 2>"$log" >&2 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
    grep -q "listening on" "$log" && break
    if ! kill -0 "$server" 2>/dev/null; then
        echo "meshcall serve exited early; log:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.1
done
grep -q "listening on" "$log" || { echo "meshcall serve not ready after 10 s; log:" >&2; cat "$log" >&2; exit 1; }

set +e
"$py" "$here/python_sdk_conformance.py" --server "ws://127.0.0.1:$port" --meshcall "$meshcall" \
    --kid "$kid" --secret "$secret" --key "$key" "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "--- server log: $log (last 40 lines) ---" >&2
    tail -n 40 "$log" >&2
fi
exit "$rc"
