// Tiny static HTTP server for the interop page, bound to 127.0.0.1 only.
//
//   /  or /peer.html   -> peer.html (this directory)
//   /peer.mjs          -> peer.mjs  (this directory)
//   /sdk/<file>        -> <modules>/node_modules/@metered-ca/realtime/dist/<file>
//
// The page must come from http://127.0.0.1:<port>: that origin is a secure context, so
// getUserMedia works, and the SDK accepts ws://127.0.0.1 signalling URLs.
//
// Library use:  import { startStaticServer } from "./serve.mjs";
//               const { origin, close } = await startStaticServer({ modulesDir });
// CLI use:      node serve.mjs [--port N] [--modules DIR]   (prints "serving http://127.0.0.1:N")

import http from "node:http";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

/** Where `npm ci` put node_modules (outside the repository). */
export function defaultModulesDir() {
    return (
        process.env.MESHCALL_INTEROP_JS_DIR ||
        path.join(process.env.HOME || os.homedir(), ".cache", "meshcall", "interop-js")
    );
}

const TYPES = {
    ".html": "text/html; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".json": "application/json; charset=utf-8",
};

/** Resolve `rel` inside `root`, refusing anything that escapes it. */
function inside(root, rel) {
    const full = path.resolve(root, "." + path.posix.normalize("/" + rel));
    return full === root || full.startsWith(root + path.sep) ? full : null;
}

export async function startStaticServer({ port = 0, modulesDir = defaultModulesDir(), pageDir = here } = {}) {
    const sdkDir = path.join(modulesDir, "node_modules", "@metered-ca", "realtime", "dist");
    await fs.access(path.join(sdkDir, "index.mjs")).catch(() => {
        throw new Error(`SDK not found in ${sdkDir}: run tests/interop/js/setup.sh first`);
    });
    const server = http.createServer(async (req, res) => {
        let file = null;
        const url = new URL(req.url, "http://127.0.0.1");
        const p = decodeURIComponent(url.pathname);
        if (p === "/" || p === "/peer.html") file = path.join(pageDir, "peer.html");
        else if (p === "/peer.mjs") file = path.join(pageDir, "peer.mjs");
        else if (p.startsWith("/sdk/")) file = inside(sdkDir, p.slice("/sdk/".length));
        if (req.method !== "GET" && req.method !== "HEAD") file = null;
        if (!file) {
            res.writeHead(p === "/favicon.ico" ? 204 : 404, { "cache-control": "no-store" });
            res.end();
            return;
        }
        try {
            const body = await fs.readFile(file);
            res.writeHead(200, {
                "content-type": TYPES[path.extname(file)] || "application/octet-stream",
                "cache-control": "no-store",
            });
            res.end(req.method === "HEAD" ? undefined : body);
        } catch {
            res.writeHead(404, { "cache-control": "no-store" });
            res.end();
        }
    });
    await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, "127.0.0.1", resolve);
    });
    const origin = `http://127.0.0.1:${server.address().port}`;
    return {
        origin,
        server,
        close: () => new Promise((resolve) => server.close(() => resolve())),
    };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    const args = process.argv.slice(2);
    const opt = (name) => {
        const i = args.indexOf(name);
        return i >= 0 ? args[i + 1] : undefined;
    };
    const { origin } = await startStaticServer({
        port: Number(opt("--port") || 0),
        modulesDir: opt("--modules") || defaultModulesDir(),
    });
    console.log(`serving ${origin}`);
}
