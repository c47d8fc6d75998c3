#!/usr/bin/env bash
# Installs what the browser interop tests need, idempotently, OUTSIDE the loopback namespace
# (it downloads): Debian's chromium (apt) and the npm packages pinned in package-lock.json
# (@metered-ca/realtime, playwright-core) into a cache outside the repository. No browser is
# downloaded by npm: playwright-core drives /usr/bin/chromium through executablePath.
#
#   tests/interop/js/setup.sh
#
# Environment: MESHCALL_INTEROP_JS_DIR (default ~/.cache/meshcall/interop-js).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${MESHCALL_INTEROP_JS_DIR:-$HOME/.cache/meshcall/interop-js}"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# 1. Debian packages: chromium (the browser), nodejs/npm only if missing (the machine image has
#    Node 20; Debian 12's own nodejs is 18, too old for playwright-core 1.64).
apt_missing=()
dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed" || apt_missing+=(chromium)
command -v node >/dev/null || apt_missing+=(nodejs)
command -v npm >/dev/null || apt_missing+=(npm)
if [ "${#apt_missing[@]}" -gt 0 ]; then
    echo "setup: apt-get install ${apt_missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "setup: node $(node --version) is too old (playwright-core 1.64 needs >= 20)" >&2
    exit 1
fi

# 2. npm packages, exactly as locked, into the cache. Re-run `npm ci` only when the lock changed.
mkdir -p "$dir"
stamp="$dir/.lock.sha256"
want="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] ||
    [ ! -f "$dir/node_modules/@metered-ca/realtime/dist/index.mjs" ] ||
    [ ! -d "$dir/node_modules/playwright-core" ]; then
    echo "setup: npm ci in $dir"
    cp "$here/package.json" "$here/package-lock.json" "$dir/"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
fi

echo "setup: ok ($(/usr/bin/chromium --version 2>/dev/null | head -n 1); node $(node --version);" \
    "SDK $(node -p "require('$dir/node_modules/@metered-ca/realtime/package.json').version");" \
    "playwright-core $(node -p "require('$dir/node_modules/playwright-core/package.json').version"))"
