// One interop peer in the page: the official @metered-ca/realtime SDK (served from the local
// node_modules copy under /sdk/) joined to a room on a meshcall server.
//
// Query parameters:
//   server   signalling origin, ws://127.0.0.1:PORT (the SDK appends /v1)
//   token    a JWT (given to the SDK through tokenProvider)  | key  a publishable key (apiKey)
//   room     channel to join
//   name     local label (for tokens the remote side sees the JWT's peerMetadata instead)
//   camera=1 publish the fake camera with addStream(stream, {role: "camera"})
//   audio=1  add the fake microphone to the same stream
//   dc       when to open our data channel to each remote peer:
//              joined    (default) — at peer-joined and on connection-reset (the JS SDK's
//                        recommended pattern): the channel rides in the first offer, and in a
//                        media-less call it is what starts negotiation at all
//              connected — on every transition to `connected` on a new pc (the Flutter docs'
//                        pattern). It needs media to ever connect, and when BOTH sides do it the
//                        two renegotiation offers collide: in Chromium 156 the polite side's
//                        remote video then often stops rendering (see README.md)
//              none      — only on the `open-dc` command; channels the remote opens still work
//   auto=1   send a direct hello at peer-joined, a DC hello at dc-open and a broadcast every second
//   trace=1  also record every signalling frame in and out (event "ws")
//   debug=1  also record SDK debug/info logs (event "log"; warn/error are always recorded)
//
// Every event is appended to window.__events as a JSON object
// {event, peer?, ..., t: performance.now(), wall: Date.now()}.
// window.__meshcall.cmd({cmd, ...}) runs a command (see runCommand) and resolves {ok, error?, ...}.

import { MeteredPeer, DataChannel } from "/sdk/index.mjs";

const q = new URLSearchParams(location.search);
const flag = (k) => q.get(k) === "1" || q.get(k) === "true";
const cfg = {
    server: q.get("server"),
    token: q.get("token"),
    key: q.get("key"),
    room: q.get("room") || "interop",
    name: q.get("name") || "browser",
    camera: flag("camera"),
    audio: flag("audio"),
    auto: flag("auto"),
    trace: flag("trace"),
    debug: flag("debug"),
    dcLabel: q.get("dcLabel") || "meshcall",
};
cfg.dc = q.get("dc") || "joined";

const events = [];
window.__events = events;
const round = (x) => Math.round(x * 10) / 10;
function record(event, fields = {}) {
    const e = { event, ...fields, t: round(performance.now()), wall: Date.now() };
    events.push(e);
    return e;
}
function errFields(err) {
    if (!err || typeof err !== "object") return { message: String(err) };
    const out = { name: err.name || "Error", message: String(err.message || err) };
    for (const k of ["code", "closeCode", "closeReason", "size", "cap"]) {
        if (err[k] !== undefined) out[k] = err[k];
    }
    return out;
}
const status = (s) => {
    const el = document.getElementById("status");
    if (el) el.textContent = s;
};

// ---- signalling socket: our factory keeps a handle on each WebSocket the SDK opens ----------
// It is the documented `webSocketFactory` option; the socket itself is the browser's.
// `reconnect` closes the live socket with 4000 (the SDK's own inactivity code, non-terminal),
// so the SDK goes through its real reconnect + reconcile path.
let socket = null;
let socketSeq = 0;
// Track metadata as it appeared on the wire, by sender: `${from}|${trackId}` -> metadata.
// Used to report what a msid-based lookup (the Python SDK's rule) would resolve; the SDK's own
// answer is reported separately as `metadata`.
const wireTrackMeta = new Map();

function webSocketFactory(url) {
    const ws = new WebSocket(url);
    const n = ++socketSeq;
    socket = ws;
    const origSend = ws.send.bind(ws);
    ws.send = (data) => {
        if (cfg.trace) record("ws", { dir: "out", socket: n, frame: tryParse(data) });
        origSend(data);
    };
    ws.addEventListener("open", () => record("ws-open", { socket: n }));
    ws.addEventListener("close", (ev) =>
        record("ws-close", { socket: n, code: ev.code, reason: ev.reason, wasClean: ev.wasClean }),
    );
    ws.addEventListener("message", (ev) => {
        if (typeof ev.data !== "string") return;
        const frame = tryParse(ev.data);
        if (cfg.trace) record("ws", { dir: "in", socket: n, frame });
        const meta = frame && frame.type === "direct" && frame.data && frame.data.__meteredTrackMeta;
        if (meta && typeof meta.trackId === "string") {
            const key = `${frame.from}|${meta.trackId}`;
            if (meta.metadata === undefined) wireTrackMeta.delete(key);
            else wireTrackMeta.set(key, meta.metadata);
        }
    });
    return ws;
}
function tryParse(s) {
    try {
        return JSON.parse(s);
    } catch {
        return s;
    }
}

const sdkLogger = {
    debug: (msg, ctx) => cfg.debug && record("log", { level: "debug", msg, ctx }),
    info: (msg, ctx) => cfg.debug && record("log", { level: "info", msg, ctx }),
    warn: (msg, ctx) => record("log", { level: "warn", msg, ctx }),
    error: (msg, ctx) => record("log", { level: "error", msg, ctx }),
};

// ---- the peer ----------------------------------------------------------------------------
const opts = { url: cfg.server, logger: sdkLogger, webSocketFactory };
if (cfg.token) opts.tokenProvider = async () => cfg.token;
else opts.apiKey = cfg.key;

let peer;
let tJoin = null; // performance.now() when join() was called
const peerJoinedAt = new Map(); // peerId -> t of peer-joined
const remotes = new Map(); // peerId -> RemotePeer (current object)
const channels = new Map(); // peerId -> { local, localPc, remote }

function chan(peerId) {
    let c = channels.get(peerId);
    if (!c) channels.set(peerId, (c = { local: null, localPc: null, remote: null }));
    return c;
}

function decodeDc(data) {
    if (typeof data === "string") return { data: tryParse(data) };
    const bytes = data instanceof ArrayBuffer ? data.byteLength : data?.size ?? 0;
    return { binary: true, bytes };
}

function wireDc(peerId, dc, origin) {
    const label = dc.label;
    let opened = false;
    const onOpen = () => {
        if (opened) return;
        opened = true;
        record("dc-open", { peer: peerId, label, origin });
        if (cfg.auto && origin === "local") {
            dc.send(JSON.stringify({ hello: "dc", from: cfg.name })).catch((err) =>
                record("error", { peer: peerId, kind: "dc-send", ...errFields(err) }),
            );
        }
    };
    dc.on("open", onOpen);
    dc.on("message", ({ data }) => record("dc-message", { peer: peerId, via: "p2p", label, origin, ...decodeDc(data) }));
    dc.on("close", () => record("dc-close", { peer: peerId, label, origin }));
    // Chromium reports an OperationError ("User-Initiated Abort") on every channel of a pc that
    // closes; it is always followed by dc-close, so it is not an `error` event.
    dc.on("error", ({ err }) => record("dc-error", { peer: peerId, label, origin, ...errFields(err) }));
    if (dc.readyState === "open") onOpen();
}

function openDc(remote, why) {
    const c = chan(remote.id);
    const pc = remote.pc;
    if (c.local && c.localPc === pc && (c.local.readyState === "open" || c.local.readyState === "connecting")) {
        return false;
    }
    if (c.local) c.local.close();
    const dc = new DataChannel(pc.createDataChannel(cfg.dcLabel));
    c.local = dc;
    c.localPc = pc;
    record("dc-create", { peer: remote.id, label: cfg.dcLabel, why });
    wireDc(remote.id, dc, "local");
    return true;
}

// The sender's track id for a received track: find the transceiver's mid, then the
// `a=msid:<stream> <track>` line of that m-section in the remote description.
function msidTrackId(pc, track) {
    try {
        const tr = pc.getTransceivers().find((x) => x.receiver && x.receiver.track === track);
        const sdp = pc.remoteDescription && pc.remoteDescription.sdp;
        if (!tr || !tr.mid || !sdp) return { mid: tr ? tr.mid : null, msidTrackId: null };
        for (const section of sdp.split(/\r?\nm=/).slice(1)) {
            if (!new RegExp(`\\r?\\na=mid:${tr.mid.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\r?(\\n|$)`).test("\n" + section)) {
                continue;
            }
            const m = section.match(/\na=msid:(\S+) (\S+)/);
            return { mid: tr.mid, msidTrackId: m ? m[2] : null };
        }
        return { mid: tr.mid, msidTrackId: null };
    } catch {
        return { mid: null, msidTrackId: null };
    }
}

// Received video: report the first decoded frame and, after 10 frames with advancing media
// time, that frames advance. requestVideoFrameCallback when available, currentTime polling too.
const videos = new Map(); // `${peerId}|${streamId}` -> {video, stop}
function watchVideo(peerId, stream) {
    const key = `${peerId}|${stream.id}`;
    const old = videos.get(key);
    if (old) old.stop();
    const video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.srcObject = stream;
    video.dataset.peer = peerId;
    document.getElementById("remote").appendChild(video);
    let stopped = false;
    let frames = 0;
    let firstMediaTime = null;
    let lastMediaTime = null;
    let firstDone = false;
    let advancingDone = false;
    const since = (t) => ({
        sinceJoinMs: tJoin === null ? null : round(t - tJoin),
        sincePeerJoinedMs: peerJoinedAt.has(peerId) ? round(t - peerJoinedAt.get(peerId)) : null,
    });
    const onFrame = (mediaTime, via) => {
        if (stopped) return;
        if (!firstDone && video.videoWidth > 0) {
            firstDone = true;
            firstMediaTime = mediaTime;
            record("first-frame", {
                peer: peerId,
                streamId: stream.id,
                stream: stream.id,
                kind: "video",
                videoWidth: video.videoWidth,
                videoHeight: video.videoHeight,
                via,
                ...since(performance.now()),
            });
        }
        if (firstDone && mediaTime !== lastMediaTime) {
            frames++;
            lastMediaTime = mediaTime;
        }
        if (firstDone && !advancingDone && frames >= 10 && mediaTime > firstMediaTime) {
            advancingDone = true;
            record("video-advancing", {
                peer: peerId,
                streamId: stream.id,
                videoWidth: video.videoWidth,
                videoHeight: video.videoHeight,
                frames,
                mediaSeconds: round(mediaTime - firstMediaTime),
                via,
            });
        }
    };
    if (typeof video.requestVideoFrameCallback === "function") {
        const loop = (_now, meta) => {
            onFrame(meta.mediaTime, "rvfc");
            if (!stopped) video.requestVideoFrameCallback(loop);
        };
        video.requestVideoFrameCallback(loop);
    }
    const timer = setInterval(() => {
        if (video.readyState >= 2) onFrame(video.currentTime, "currentTime");
    }, 100);
    video.play().catch((err) => record("log", { level: "warn", msg: "video.play failed", ctx: errFields(err) }));
    const stop = () => {
        stopped = true;
        clearInterval(timer);
        video.srcObject = null;
        video.remove();
        videos.delete(key);
    };
    videos.set(key, { video, stop });
}

function attachRemote(remote) {
    const id = remote.id;
    remotes.set(id, remote);
    remote.on("state-change", ({ from, to }) => {
        const t = performance.now();
        const e = { peer: id, from, to };
        if (to === "connected") {
            e.sinceJoinMs = tJoin === null ? null : round(t - tJoin);
            e.sincePeerJoinedMs = peerJoinedAt.has(id) ? round(t - peerJoinedAt.get(id)) : null;
        }
        record("state-change", e);
        if (to === "connected" && cfg.dc === "connected") openDc(remote, "connected");
    });
    remote.on("track", ({ track, streams, metadata }) => {
        const { mid, msidTrackId: senderTrackId } = msidTrackId(remote.pc, track);
        record("track", {
            peer: id,
            kind: track.kind,
            trackId: track.id,
            streamIds: streams.map((s) => s.id),
            mid,
            msidTrackId: senderTrackId,
            ...(metadata !== undefined ? { metadata } : {}),
            wireMetadata: senderTrackId ? wireTrackMeta.get(`${id}|${senderTrackId}`) ?? null : null,
        });
    });
    remote.on("stream-added", ({ stream, metadata }) => {
        // wireMetadata: what the sender announced for this stream's first track, matched by the
        // msid track id of its m-section (the SDK itself looks up by the receiving track's id).
        let wireMetadata = null;
        for (const track of stream.getTracks()) {
            const { msidTrackId: senderTrackId } = msidTrackId(remote.pc, track);
            const m = senderTrackId ? wireTrackMeta.get(`${id}|${senderTrackId}`) : undefined;
            if (m !== undefined) {
                wireMetadata = m;
                break;
            }
        }
        record("stream-added", {
            peer: id,
            streamId: stream.id,
            stream: stream.id,
            tracks: stream.getTracks().map((t) => ({ kind: t.kind, id: t.id })),
            metadata: metadata ?? null,
            wireMetadata,
            ...(metadata === undefined && wireMetadata ? { metadataSource: "wire" } : {}),
        });
        if (stream.getVideoTracks().length > 0) watchVideo(id, stream);
        else stream.addEventListener("addtrack", (ev) => ev.track.kind === "video" && watchVideo(id, stream), { once: true });
    });
    remote.on("stream-removed", ({ stream }) => {
        record("stream-removed", { peer: id, streamId: stream.id, stream: stream.id });
        const v = videos.get(`${id}|${stream.id}`);
        if (v) v.stop();
    });
    remote.on("data-channel", ({ channel }) => {
        const c = chan(id);
        if (c.remote) c.remote.close();
        const dc = new DataChannel(channel);
        c.remote = dc;
        record("dc-remote", { peer: id, label: channel.label });
        wireDc(id, dc, "remote");
    });
    remote.on("connection-reset", () => {
        record("connection-reset", { peer: id });
        if (cfg.dc === "joined") openDc(remote, "connection-reset");
    });
    remote.on("negotiation-error", ({ err }) => record("error", { peer: id, kind: "negotiation-error", fatal: err?.name === "IceRestartExhaustedError", ...errFields(err) }));
    remote.on("ice-candidate-error", ({ err }) => record("error", { peer: id, kind: "ice-candidate-error", ...errFields(err) }));
}

function dcFor(peerId) {
    const c = channels.get(peerId);
    if (!c) return null;
    if (c.local && c.local.readyState === "open") return c.local;
    if (c.remote && c.remote.readyState === "open") return c.remote;
    return null;
}

// A compact view of one RTCPeerConnection for diagnostics (the `stats` command).
async function pcSummary(pc) {
    const s = {
        signalingState: pc.signalingState,
        connectionState: pc.connectionState,
        iceConnectionState: pc.iceConnectionState,
        iceGatheringState: pc.iceGatheringState,
        transceivers: pc.getTransceivers().map((t) => ({
            mid: t.mid,
            kind: t.receiver.track.kind,
            direction: t.direction,
            currentDirection: t.currentDirection,
            sending: t.sender.track ? t.sender.track.id : null,
        })),
        rtp: [],
        candidatePair: null,
    };
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((r) => byId.set(r.id, r));
    report.forEach((r) => {
        if (r.type === "inbound-rtp" || r.type === "outbound-rtp") {
            s.rtp.push({
                type: r.type,
                kind: r.kind,
                mid: r.mid,
                packets: r.packetsReceived ?? r.packetsSent,
                frames: r.framesDecoded ?? r.framesSent ?? r.framesEncoded,
                frameWidth: r.frameWidth,
                framesDropped: r.framesDropped,
                framesReceived: r.framesReceived,
                retransmitted: r.retransmittedPacketsReceived ?? r.retransmittedPacketsSent,
                nacks: r.nackCount,
                freezeCount: r.freezeCount,
                decoder: r.decoderImplementation,
                jitterBufferDelay: r.jitterBufferDelay,
                jitterBufferEmittedCount: r.jitterBufferEmittedCount,
                codec: r.codecId && byId.get(r.codecId) ? byId.get(r.codecId).mimeType : null,
            });
        }
        if (r.type === "transport" && r.selectedCandidatePairId) {
            const pair = byId.get(r.selectedCandidatePairId);
            const l = pair && byId.get(pair.localCandidateId);
            const rc = pair && byId.get(pair.remoteCandidateId);
            s.candidatePair = pair
                ? {
                      local: l ? `${l.protocol} ${l.address}:${l.port} ${l.candidateType}` : null,
                      remote: rc ? `${rc.protocol} ${rc.address}:${rc.port} ${rc.candidateType}` : null,
                      rttMs: pair.currentRoundTripTime !== undefined ? pair.currentRoundTripTime * 1000 : null,
                  }
                : null;
        }
    });
    return s;
}

let leaving = false;
async function runCommand(c) {
    switch (c.cmd) {
        case "send":
            await peer.send(c.data);
            return {};
        case "sendTo":
            await peer.sendTo(c.peer, c.data);
            return {};
        case "dc-send": {
            const dc = dcFor(c.peer);
            if (!dc) throw Object.assign(new Error(`no open data channel to ${c.peer}`), { name: "NoDataChannel" });
            await dc.send(typeof c.data === "string" ? c.data : JSON.stringify(c.data));
            return { label: dc.label };
        }
        case "open-dc": {
            const remote = remotes.get(c.peer);
            if (!remote) throw Object.assign(new Error(`unknown peer ${c.peer}`), { name: "UnknownPeer" });
            return { created: openDc(remote, "command") };
        }
        case "reconnect": {
            if (!socket || socket.readyState !== WebSocket.OPEN) {
                throw Object.assign(new Error("no open signalling socket"), { name: "NoSocket" });
            }
            socket.close(4000, "interop: forced drop");
            return {};
        }
        case "leave":
            leaving = true;
            await peer.close(c.reason || "leave");
            return {};
        case "stats": {
            const remote = remotes.get(c.peer);
            if (!remote) throw Object.assign(new Error(`unknown peer ${c.peer}`), { name: "UnknownPeer" });
            const summary = await pcSummary(remote.pc);
            summary.videos = [...videos.entries()]
                .filter(([key]) => key.startsWith(c.peer + "|"))
                .map(([key, { video }]) => ({
                    streamId: key.slice(c.peer.length + 1),
                    readyState: video.readyState,
                    paused: video.paused,
                    currentTime: video.currentTime,
                    videoWidth: video.videoWidth,
                    tracks: video.srcObject
                        ? video.srcObject.getTracks().map((t) => ({ kind: t.kind, muted: t.muted, readyState: t.readyState, enabled: t.enabled }))
                        : null,
                }));
            summary.visibility = document.visibilityState;
            return summary;
        }
        case "probe-video": {
            // Diagnostics: play each video receiver's current track in a fresh <video> element.
            const remote = remotes.get(c.peer);
            if (!remote) throw Object.assign(new Error(`unknown peer ${c.peer}`), { name: "UnknownPeer" });
            const held = [...videos.entries()].filter(([key]) => key.startsWith(c.peer + "|")).flatMap(([, v]) => (v.video.srcObject ? v.video.srcObject.getTracks() : []));
            const results = [];
            for (const t of remote.pc.getTransceivers()) {
                if (t.receiver.track.kind !== "video") continue;
                const v = document.createElement("video");
                v.muted = true;
                v.srcObject = new MediaStream([t.receiver.track]);
                v.play().catch(() => {});
                await new Promise((r) => setTimeout(r, 1500));
                results.push({ mid: t.mid, sameTrackAsHeld: held.includes(t.receiver.track), readyState: v.readyState, videoWidth: v.videoWidth, currentTime: v.currentTime });
                v.srcObject = null;
            }
            return { results };
        }
        case "state":
            return {
                state: peer.state,
                peerId: peer.peerId,
                remotes: peer.remotePeers.map((r) => ({ ...r.toJSON(), polite: r.polite })),
            };
        default:
            throw Object.assign(new Error(`unknown command ${JSON.stringify(c.cmd)}`), { name: "UnknownCommand" });
    }
}

window.__meshcall = {
    cfg: { ...cfg, token: cfg.token ? "<set>" : null, key: cfg.key ? "<set>" : null },
    ready: false,
    fatal: null,
    async cmd(c) {
        try {
            const r = await runCommand(c);
            return { ok: true, ...r };
        } catch (err) {
            return { ok: false, error: errFields(err) };
        }
    },
    get peer() {
        return peer;
    },
};

function fatal(where, err) {
    window.__meshcall.fatal = { where, ...errFields(err) };
    record("error", { kind: where, fatal: true, ...errFields(err) });
    status(`fatal: ${where}`);
}

async function main() {
    try {
        peer = new MeteredPeer(opts);
    } catch (err) {
        fatal("construct", err);
        return;
    }
    peer.on("state-change", ({ from, to }) => {
        record("local-state", { from, to });
        status(to);
        if (to === "closed" && !leaving) fatal("closed", new Error("MeteredPeer closed without leave"));
    });
    peer.on("joined", ({ peerId, channel }) =>
        record("joined", { id: peerId, peer: peerId, room: channel, name: cfg.name, joinMs: tJoin === null ? null : round(performance.now() - tJoin) }),
    );
    peer.on("left", ({ peerId, channel, reason }) => record("left", { id: peerId, room: channel, reason: reason ?? null }));
    peer.on("peer-joined", ({ peer: remote }) => {
        peerJoinedAt.set(remote.id, performance.now());
        record("peer-joined", {
            peer: remote.id,
            name: remote.metadata && typeof remote.metadata.username === "string" ? remote.metadata.username : null,
            metadata: remote.metadata ?? null,
            polite: remote.polite,
            state: remote.state,
        });
        attachRemote(remote);
        if (cfg.dc === "joined") openDc(remote, "peer-joined");
        if (cfg.auto) {
            peer.sendTo(remote.id, { hello: "direct", from: cfg.name }).catch((err) =>
                record("error", { peer: remote.id, kind: "sendTo", ...errFields(err) }),
            );
        }
    });
    peer.on("peer-left", ({ peer: remote }) => {
        record("peer-left", {
            peer: remote.id,
            name: remote.metadata && typeof remote.metadata.username === "string" ? remote.metadata.username : null,
        });
        remotes.delete(remote.id);
        const c = channels.get(remote.id);
        if (c) {
            c.local?.close();
            c.remote?.close();
            channels.delete(remote.id);
        }
        for (const [key, v] of videos) if (key.startsWith(remote.id + "|")) v.stop();
    });
    peer.on("data", ({ senderPeerId, data, kind, senderMetadata }) =>
        record("data", { peer: senderPeerId, via: "server", kind, data, ...(senderMetadata ? { senderMetadata } : {}) }),
    );
    peer.on("error", ({ err }) => record("error", { kind: "peer-error", ...errFields(err) }));

    if (cfg.camera || cfg.audio) {
        let stream;
        try {
            stream = await navigator.mediaDevices.getUserMedia({
                video: cfg.camera ? { width: 640, height: 480, frameRate: 30 } : false,
                audio: cfg.audio,
            });
        } catch (err) {
            fatal("getUserMedia", err);
            return;
        }
        const v = document.createElement("video");
        v.muted = true;
        v.autoplay = true;
        v.srcObject = stream;
        document.getElementById("local").appendChild(v);
        peer.addStream(stream, { role: "camera" });
        record("local-stream", {
            streamId: stream.id,
            tracks: stream.getTracks().map((t) => ({ kind: t.kind, id: t.id, label: t.label })),
            metadata: { role: "camera" },
        });
    }

    tJoin = performance.now();
    record("joining", { room: cfg.room, server: cfg.server, auth: cfg.token ? "token" : "key" });
    try {
        await peer.join(cfg.room);
    } catch (err) {
        fatal("join", err);
        return;
    }
    window.__meshcall.ready = true;

    if (cfg.auto) {
        let seq = 0;
        const tick = setInterval(() => {
            if (peer.state === "closed" || peer.state === "leaving") return clearInterval(tick);
            if (peer.state !== "joined") return;
            peer.send({ hello: "broadcast", from: cfg.name, seq: seq++ }).catch((err) => record("error", { kind: "send", ...errFields(err) }));
        }, 1000);
    }
}

main().catch((err) => fatal("main", err));
