#!/usr/bin/env bash
# Builds meshcall's Debian package with cargo-deb and checks that it is usable:
#   1. cargo-deb (pinned version, `cargo install --locked` from crates.io if missing),
#   2. `cargo build --release` (unless --no-build), then `cargo deb --no-build` on a private copy
#      of the binary; metadata in Cargo.toml [package.metadata.deb]: binary, desktop entry,
#      256x256 icon, hand-listed run-time libraries,
#   3. checks: control fields and file list; the package unpacked into a scratch root with
#      `dpkg -x`; `meshcall --version` from there; every linked library resolves; the desktop
#      entry validates (if desktop-file-validate is installed); dependencies satisfiable on this
#      machine (`dpkg --dry-run -i`, as root); and, as root with Xvfb installed, the unpacked app
#      opens its window on a private Xvfb inside a loopback-only network namespace and exits 0
#      on SIGTERM.
#
#   packaging/build-deb.sh [--no-build] [--binary PATH] [--install]
#
#   --no-build  package the release binary already built (CARGO_TARGET_DIR/release/meshcall)
#   --binary PATH
#               package this binary instead (implies --no-build; debug info is stripped from
#               the packaged copy and the package is compressed fast). The test suite uses it
#               with the debug build it already has, so CI checks the packaging without a
#               second, release build.
#   --install   also install it on this machine (`apt-get install ./meshcall_….deb`, root) and
#               run /usr/bin/meshcall --version
#
# Environment: CARGO_TARGET_DIR (default ./target), CARGO_DEB_VERSION (default 3.8.0).
# The last line printed is the path of the .deb. Needs dpkg-deb (dpkg-dev for cargo-deb's
# dpkg-shlibdeps, which computes `$auto`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

no_build=0
install=0
binary=""
while [ $# -gt 0 ]; do
    arg="$1"
    shift
    case "$arg" in
        --no-build) no_build=1 ;;
        --binary)
            [ $# -gt 0 ] || { echo "--binary needs a path" >&2; exit 2; }
            binary="$1"
            no_build=1
            shift
            ;;
        --install) install=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "usage: $0 [--no-build] [--binary PATH] [--install]" >&2
            exit 2
            ;;
    esac
done

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

command -v dpkg-deb >/dev/null || fail "dpkg-deb not found (a Debian-based system is needed)"
# cargo-deb computes `$auto` with dpkg-shlibdeps; without it the linked libraries go unlisted.
command -v dpkg-shlibdeps >/dev/null || fail "dpkg-shlibdeps not found: apt-get install dpkg-dev"

want_cargo_deb="${CARGO_DEB_VERSION:-3.8.0}"
if ! cargo deb --version 2>/dev/null | grep -qF "$want_cargo_deb"; then
    echo "== cargo install cargo-deb $want_cargo_deb (crates.io)"
    cargo install cargo-deb --version "$want_cargo_deb" --locked
fi

target_dir="${CARGO_TARGET_DIR:-target}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"

if [ "$no_build" -eq 0 ]; then
    echo "== cargo build --release (without the bench feature)"
    cargo build --release --locked --bin meshcall --no-default-features
fi
bin="${binary:-$target_dir/release/meshcall}"
[ -x "$bin" ] || fail "no binary at $bin (build it, or drop --no-build)"

# Package a private copy of the binary: a target directory shared with other work trees gets
# its target/release/meshcall overwritten by their builds at any moment. cargo-deb maps the
# asset path target/release/… onto CARGO_TARGET_DIR, so it takes the copy from the stage.
stage="$(mktemp -d)"
root="$(mktemp -d)"
trap 'rm -rf "$stage" "$root"' EXIT
mkdir -p "$stage/release" "$target_dir/debian"
cp "$bin" "$stage/release/meshcall"
deb_flags=()
if [ -n "$binary" ]; then
    # A debug build carries ~200 MB of DWARF; the package does not need it.
    objcopy --strip-debug "$stage/release/meshcall"
    deb_flags+=(--fast)
fi

echo "== cargo deb ($(cargo deb --version))"
# cargo-deb prints the path of the package it wrote as its last line.
deb="$(CARGO_TARGET_DIR="$stage" cargo deb --no-build --locked "${deb_flags[@]}" --output "$target_dir/debian/" | tail -n 1)"
[ -f "$deb" ] || fail "cargo deb did not produce a package (got '$deb')"
echo "package: $deb ($(du -h "$deb" | cut -f1))"

echo "== control fields"
dpkg-deb --field "$deb" Package Version Architecture Depends Recommends Installed-Size
[ "$(dpkg-deb --field "$deb" Package)" = meshcall ] || fail "Package is not meshcall"
case "$(dpkg-deb --field "$deb" Version)" in
    "$version" | "$version"-*) ;;
    *) fail "Version is not $version" ;;
esac
depends="$(dpkg-deb --field "$deb" Depends)"
# Linked (found by $auto) and loaded with dlopen (listed by hand): both must be there.
for p in libc6 libasound2 libx11-6 libx11-xcb1 libxcursor1 libxi6 libxkbcommon0 \
    libxkbcommon-x11-0 libegl1 libgl1-mesa-dri libwayland-client0; do
    grep -qE "(^|[ ,|])$p([ ,(]|$)" <<<"$depends" || fail "Depends lacks $p: $depends"
done

echo "== files"
contents="$(dpkg-deb --contents "$deb")"
for f in ./usr/bin/meshcall ./usr/share/applications/meshcall.desktop \
    ./usr/share/icons/hicolor/256x256/apps/meshcall.png ./usr/share/doc/meshcall/copyright; do
    grep -qF " $f" <<<"$contents" || fail "$f is not in the package"
done
grep -F ./usr/ <<<"$contents" | awk '{print "  " $1, $3, $6}'

echo "== unpacked into a scratch root"
dpkg -x "$deb" "$root"
got="$("$root/usr/bin/meshcall" --version)"
[ "$got" = "meshcall $version" ] || fail "--version printed '$got', wanted 'meshcall $version'"
echo "$root/usr/bin/meshcall --version: $got"
if ldd "$root/usr/bin/meshcall" | grep -q "not found"; then
    ldd "$root/usr/bin/meshcall" >&2
    fail "a linked library is missing"
fi
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate "$root/usr/share/applications/meshcall.desktop"
    echo "desktop-file-validate: ok"
else
    echo "desktop-file-validate not installed (apt-get install desktop-file-utils): skipped"
fi

if [ "$(id -u)" -eq 0 ]; then
    echo "== dependencies on this machine (dpkg --dry-run -i)"
    dpkg --dry-run -i "$deb" >/dev/null || fail "dpkg would not install it here (missing dependencies?)"
    echo "satisfiable"
fi

if [ "$(id -u)" -eq 0 ] && command -v Xvfb >/dev/null && command -v xwininfo >/dev/null &&
    command -v unshare >/dev/null; then
    echo "== the unpacked app opens its window (Xvfb, loopback-only network namespace)"
    # Nothing here connects anywhere (the join screen), but the rule for anything that starts
    # the app holds: only loopback exists in its namespace.
    MESHCALL_ROOT="$root" unshare -n bash -c '
        set -euo pipefail
        ip link set lo up
        run="$(mktemp -d)"
        Xvfb -displayfd 3 -screen 0 1280x720x24 -nolisten tcp 3>"$run/display" 2>/dev/null &
        xvfb=$!
        trap "kill $xvfb 2>/dev/null; rm -rf $run" EXIT
        for _ in $(seq 50); do [ -s "$run/display" ] && break; sleep 0.1; done
        export DISPLAY=":$(cat "$run/display")" XDG_DATA_HOME="$run/data" XDG_CONFIG_HOME="$run/config"
        "$MESHCALL_ROOT/usr/bin/meshcall" 2>"$run/app.log" &
        app=$!
        # Wait for the window (WM_CLASS meshcall), at most 20 s.
        for _ in $(seq 100); do
            xwininfo -root -children 2>/dev/null | grep -q "\"meshcall\"" && break
            kill -0 "$app" 2>/dev/null || { cat "$run/app.log" >&2; echo "FAIL: the app exited" >&2; exit 1; }
            sleep 0.2
        done
        xwininfo -root -children | grep -q "\"meshcall\"" || { cat "$run/app.log" >&2; echo "FAIL: no window" >&2; exit 1; }
        echo "window: $(xwininfo -root -children | grep "\"meshcall\"" | head -n 1 | sed "s/^ *//")"
        kill -TERM "$app"
        status=0
        wait "$app" || status=$?
        [ "$status" -eq 0 ] || { cat "$run/app.log" >&2; echo "FAIL: exit $status after SIGTERM" >&2; exit 1; }
        echo "closed on SIGTERM, exit 0"
    '
else
    echo "window check skipped (needs root for unshare -n, Xvfb and xwininfo)"
fi

if [ "$install" -eq 1 ]; then
    echo "== apt-get install $deb"
    [ "$(id -u)" -eq 0 ] || fail "--install needs root"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$(realpath "$deb")"
    got="$(/usr/bin/meshcall --version)"
    [ "$got" = "meshcall $version" ] || fail "/usr/bin/meshcall --version printed '$got'"
    echo "/usr/bin/meshcall --version: $got"
fi

echo "ok"
echo "$deb"
