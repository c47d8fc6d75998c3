#!/usr/bin/env node
// A browser peer for interop tests: the official @metered-ca/realtime SDK in Debian's headless
// Chromium, driven with playwright-core. Prints one JSON object per line on stdout (every event the
// page records; see peer.mjs and README.md) and takes JSON commands on stdin, one per line.
//
//   node browser-peer.mjs --server ws://127.0.0.1:PORT (--token JWT | --key KEY) --room R --name N
//        [--camera] [--audio] [--duration S] [--dc joined|connected|none] [--auto]
//        [--trace] [--debug] [--chromium PATH]
//
// stdin commands: {"cmd":"send","data":…}  {"cmd":"sendTo","peer":ID,"data":…}
//   {"cmd":"dc-send","peer":ID,"data":…}  {"cmd":"open-dc","peer":ID}  {"cmd":"reconnect"}
//   {"cmd":"state"}  {"cmd":"stats","peer":ID}  {"cmd":"probe-video","peer":ID}  {"cmd":"leave"}
//   — each answered by a {"event":"cmd-result","cmd":…,"ok":…} line; an optional "id" is echoed.
//
// Exit: 0 after a clean leave (command, --duration, SIGTERM/SIGINT, or stdin "leave");
//       1 on a page error, a crash, a fatal SDK error (join rejected, peer closed by the server);
//       2 on bad arguments or an unsafe environment.
//
// Network safety: refuses to start when any non-loopback interface has an address (run it inside
// `unshare -n`; MESHCALL_ALLOW_HOST_NETWORK=1 overrides, don't). Only 127.0.0.1 is ever contacted.
//
// Environment: MESHCALL_INTEROP_JS_DIR (node_modules location, default ~/.cache/meshcall/interop-js),
//              MESHCALL_CHROMIUM (default /usr/bin/chromium).

import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { createRequire } from "node:module";
import { startStaticServer, defaultModulesDir } from "./serve.mjs";

const USAGE =
    "usage: browser-peer.mjs --server ws://127.0.0.1:PORT (--token JWT | --key KEY) --room ROOM --name NAME " +
    "[--camera] [--audio] [--duration SECONDS] [--dc joined|connected|none] [--auto] [--trace] [--debug] [--chromium PATH]";

function die(msg, code = 2) {
    process.stderr.write(`browser-peer: ${msg}\n`);
    process.exit(code);
}

function parseArgs(argv) {
    const a = { camera: false, audio: false, auto: false, trace: false, debug: false, duration: null, dc: null };
    const valued = new Set(["--server", "--token", "--key", "--room", "--name", "--duration", "--dc", "--chromium"]);
    for (let i = 0; i < argv.length; i++) {
        let k = argv[i];
        let v;
        const eq = k.indexOf("=");
        if (k.startsWith("--") && eq > 0) {
            v = k.slice(eq + 1);
            k = k.slice(0, eq);
        }
        if (valued.has(k)) {
            if (v === undefined) v = argv[++i];
            if (v === undefined) die(`${k} needs a value\n${USAGE}`);
            a[k.slice(2)] = v;
        } else if (["--camera", "--audio", "--auto", "--trace", "--debug"].includes(k)) {
            a[k.slice(2)] = true;
        } else if (k === "--help" || k === "-h") {
            process.stdout.write(USAGE + "\n");
            process.exit(0);
        } else {
            die(`unknown argument ${k}\n${USAGE}`);
        }
    }
    if (!a.server) die(`--server is required\n${USAGE}`);
    let u;
    try {
        u = new URL(a.server);
    } catch {
        die(`--server is not a URL: ${a.server}`);
    }
    if (u.protocol !== "ws:" || !["127.0.0.1", "localhost", "[::1]"].includes(u.hostname)) {
        die(`--server must be ws://127.0.0.1:PORT (loopback only), got ${a.server}`);
    }
    if (!a.token === !a.key) die(`give exactly one of --token and --key\n${USAGE}`);
    if (!a.room) die(`--room is required\n${USAGE}`);
    if (!a.name) a.name = "browser";
    if (a.duration !== null) {
        a.duration = Number(a.duration);
        if (!(a.duration > 0)) die("--duration must be a positive number of seconds");
    }
    if (a.dc !== null && !["connected", "joined", "none"].includes(a.dc)) die("--dc must be connected, joined or none");
    return a;
}

function assertLoopbackOnly() {
    if (process.env.MESHCALL_ALLOW_HOST_NETWORK === "1") return;
    const bad = [];
    for (const [name, addrs] of Object.entries(os.networkInterfaces())) {
        for (const addr of addrs || []) if (!addr.internal) bad.push(`${name} ${addr.address}`);
    }
    if (bad.length > 0) {
        die(
            `refusing to run WebRTC outside a loopback-only network namespace (found ${bad.join(", ")}); ` +
                "run inside `unshare -n bash -c 'ip link set lo up; …'`",
        );
    }
}

const args = parseArgs(process.argv.slice(2));
assertLoopbackOnly();

const modulesDir = defaultModulesDir();
let chromium;
try {
    // playwright-core is CommonJS; resolve it from the cache outside the repository.
    ({ chromium } = createRequire(path.join(modulesDir, "package.json"))("playwright-core"));
} catch (err) {
    die(`playwright-core not found under ${modulesDir} (run tests/interop/js/setup.sh): ${err.message}`);
}
const executablePath = args.chromium || process.env.MESHCALL_CHROMIUM || "/usr/bin/chromium";

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const err = (obj) => process.stderr.write(JSON.stringify(obj) + "\n");

const CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    // Real host addresses instead of mDNS .local names (a non-browser peer cannot resolve those,
    // and there is no multicast here); inside the namespace the only address is 127.0.0.1.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    // Keep timers and rendering running although nobody looks at the page.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--autoplay-policy=no-user-gesture-required",
];

let context = null;
let staticServer = null;
let userDataDir = null;
let exiting = false;

async function shutdown(code) {
    if (exiting) return;
    exiting = true;
    try {
        await pumpEvents();
    } catch {
        /* page may be gone */
    }
    try {
        if (context) await Promise.race([context.close(), new Promise((r) => setTimeout(r, 5000))]);
    } catch {
        /* ignore */
    }
    try {
        if (staticServer) await staticServer.close();
    } catch {
        /* ignore */
    }
    if (userDataDir) await fs.rm(userDataDir, { recursive: true, force: true }).catch(() => {});
    process.exit(code);
}

let page = null;
let cursor = 0;
let pumping = null;
let fatalSeen = false;
let leftSeen = false;

async function pumpOnce() {
    if (!page || page.isClosed()) return;
    const batch = await page.evaluate((n) => (window.__events ? window.__events.slice(n) : []), cursor);
    cursor += batch.length;
    for (const e of batch) {
        if (e.event === "log" || e.event === "ws") err(e);
        else out(e);
        if (e.fatal === true) fatalSeen = true;
        if (e.event === "left") leftSeen = true;
    }
}
function pumpEvents() {
    // Serialise pumps so events are printed once and in order.
    pumping = (pumping || Promise.resolve()).then(pumpOnce, pumpOnce);
    return pumping;
}

async function leave(reason) {
    if (!page || page.isClosed()) return;
    const r = await Promise.race([
        page.evaluate((why) => window.__meshcall && window.__meshcall.cmd({ cmd: "leave", reason: why }), reason),
        new Promise((resolve) => setTimeout(() => resolve({ ok: false, error: { message: "leave timed out" } }), 5000)),
    ]).catch((e) => ({ ok: false, error: { message: String(e.message || e) } }));
    await pumpEvents().catch(() => {});
    return r;
}

async function main() {
    staticServer = await startStaticServer({ modulesDir });
    userDataDir = await fs.mkdtemp(path.join(os.tmpdir(), "meshcall-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, {
        executablePath,
        headless: false, // --headless=new is in CHROMIUM_FLAGS
        args: CHROMIUM_FLAGS,
        viewport: { width: 800, height: 600 },
        permissions: ["camera", "microphone"],
    });
    page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (e) => {
        out({ event: "error", kind: "pageerror", fatal: true, name: e.name, message: e.message, wall: Date.now() });
        fatalSeen = true;
    });
    page.on("crash", () => {
        out({ event: "error", kind: "crash", fatal: true, message: "page crashed", wall: Date.now() });
        fatalSeen = true;
    });
    if (args.debug) page.on("console", (m) => err({ event: "console", level: m.type(), text: m.text() }));

    const q = new URLSearchParams({ server: args.server, room: args.room, name: args.name });
    if (args.token) q.set("token", args.token);
    else q.set("key", args.key);
    for (const f of ["camera", "audio", "auto", "trace", "debug"]) if (args[f]) q.set(f, "1");
    if (args.dc) q.set("dc", args.dc);
    out({ event: "browser", version: context.browser()?.version() ?? null, page: staticServer.origin, wall: Date.now() });
    await page.goto(`${staticServer.origin}/peer.html?${q}`);

    // Event pump.
    const timer = setInterval(async () => {
        try {
            await pumpEvents();
        } catch (e) {
            if (!exiting) {
                out({ event: "error", kind: "driver", fatal: true, message: String(e.message || e), wall: Date.now() });
                fatalSeen = true;
            }
        }
        if (fatalSeen && !exiting) {
            clearInterval(timer);
            await leave("fatal");
            shutdown(1);
        }
    }, 50);

    // Commands on stdin, run one at a time in arrival order, once the peer has joined.
    let chain = page
        .waitForFunction(() => window.__meshcall && (window.__meshcall.ready || window.__meshcall.fatal), null, {
            timeout: 0,
            polling: 50,
        })
        .catch(() => {});
    const rl = readline.createInterface({ input: process.stdin });
    rl.on("line", (line) => {
        if (!line.trim()) return;
        let c;
        try {
            c = JSON.parse(line);
        } catch (e) {
            out({ event: "cmd-result", ok: false, error: { name: "SyntaxError", message: e.message }, wall: Date.now() });
            return;
        }
        chain = chain.then(async () => {
            if (exiting) return;
            await pumpEvents().catch(() => {});
            let r;
            try {
                r = await page.evaluate((cmd) => window.__meshcall.cmd(cmd), c);
            } catch (e) {
                r = { ok: false, error: { message: String(e.message || e) } };
            }
            await pumpEvents().catch(() => {});
            out({ event: "cmd-result", cmd: c.cmd, ...(c.id !== undefined ? { id: c.id } : {}), ...r, wall: Date.now() });
            if (c.cmd === "leave" && r.ok) {
                clearInterval(timer);
                shutdown(0);
            }
        });
    });
    // stdin EOF is not a reason to leave: CI runs us without input.

    const onSignal = async () => {
        clearInterval(timer);
        await leave("signal");
        shutdown(0);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);

    if (args.duration !== null) {
        setTimeout(async () => {
            await chain.catch(() => {});
            clearInterval(timer);
            const r = await leave("duration");
            shutdown(r && r.ok && !fatalSeen ? 0 : 1);
        }, args.duration * 1000);
    }
}

main().catch(async (e) => {
    out({ event: "error", kind: "driver", fatal: true, name: e.name, message: String(e.message || e), wall: Date.now() });
    await shutdown(1);
});
