#!/usr/bin/env python3
"""Python <-> Python WebRTC interop through `meshcall serve`: two `python_peer.py` processes
(the official SDK `metered-realtime[webrtc]`) in one room. Called by two_python_peers.sh inside
a loopback-only namespace, with the server already running and tokens minted:

    two_python_peers.py --server ws://127.0.0.1:PORT --room-prefix ROOM --python PY
        --token-a JWT --token-b JWT [--id-a alice --id-b bob --name-a Alice --name-b Bob]
        [--video a|b|both|none] [--rounds N] [--log-dir DIR] [--timeout S] [--hold S]
        [--no-dc-rescue] [--debug]

The rooms are ROOM-1 … ROOM-N (the tokens must allow them, e.g. `--channel 'ROOM-*'`).
Per round: both peers start at once; the checks wait for presence with names, server-routed
data both ways, the RemotePeer `connected` on both sides with loopback-only ICE candidates,
the data channel open and P2P data both ways, the video `stream-added` with metadata
role=camera and a decoded `first-frame` (width/height > 0) at the receiver; then stdin commands
`sendTo` both ways (direct data), `dc-send`, and `leave` on one side (the other sees
`peer-left`), then the other leaves. Output: `PASS <check>` / `FAIL <check>: why`, `TIMING …`
lines, and a final `N passed, M failed`; exit 0 only if all passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent


class PeerProc:
    def __init__(self, label: str, peer_id: str, name: str, log_dir: Path) -> None:
        self.label = label
        self.peer_id = peer_id
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.changed = asyncio.Event()
        self.log_dir = log_dir
        self.stdout_log = (log_dir / f"{label}.jsonl").open("w")
        self.rc: int | None = None
        self.reader: asyncio.Task[Any] | None = None

    async def start(self, cmd: list[str]) -> None:
        stderr = (self.log_dir / f"{self.label}.stderr").open("w")
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            text = line.decode(errors="replace").rstrip("\n")
            self.stdout_log.write(text + "\n")
            self.stdout_log.flush()
            try:
                ev = json.loads(text)
            except ValueError:
                ev = {"event": "non-json", "line": text}
            self.events.append(ev)
            self.changed.set()
        self.rc = await self.proc.wait()
        self.changed.set()

    def command(self, obj: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    def find(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        for ev in self.events:
            if pred(ev):
                return ev
        return None

    def all(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [ev for ev in self.events if pred(ev)]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.terminate()
                await asyncio.wait_for(self.proc.wait(), 5)
            except (ProcessLookupError, asyncio.TimeoutError):
                try:
                    self.proc.kill()
                except ProcessLookupError:
                    pass
        if self.reader is not None:
            try:
                await asyncio.wait_for(self.reader, 5)
            except asyncio.TimeoutError:
                self.reader.cancel()
        self.stdout_log.close()


async def wait_until(peers: list[PeerProc], cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        for p in peers:
            p.changed.clear()
        waiters = [asyncio.ensure_future(p.changed.wait()) for p in peers]
        await asyncio.wait(waiters, timeout=min(remaining, 0.25), return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.timings: dict[str, list[float]] = {}

    def check(self, name: str, ok: bool, why: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {why}", flush=True)
        return ok

    def timing(self, name: str, ms: float | None) -> None:
        if ms is None:
            return
        self.timings.setdefault(name, []).append(ms)
        print(f"TIMING {name} {ms:.0f} ms", flush=True)


def is_data(ev: dict[str, Any], frm: str, via: str, kind: str | None = None) -> bool:
    return (
        ev.get("event") == "data"
        and ev.get("peer") == frm
        and ev.get("via") == via
        and (kind is None or ev.get("kind") == kind)
    )


async def run_round(args: argparse.Namespace, rnd: int, report: Report) -> None:
    prefix = f"r{rnd}/" if args.rounds > 1 else ""
    room = f"{args.room_prefix}-{rnd}"
    log_dir = Path(args.log_dir) / f"round{rnd}"
    log_dir.mkdir(parents=True, exist_ok=True)
    a = PeerProc("a", args.id_a, args.name_a, log_dir)
    b = PeerProc("b", args.id_b, args.name_b, log_dir)
    peers = [a, b]
    video = {"a": args.video in ("a", "both"), "b": args.video in ("b", "both")}
    base = [args.python, str(HERE / "python_peer.py"), "--server", args.server, "--room", room, "--duration", str(args.timeout + 30)]
    cmd_a = base + ["--token", args.token_a, "--name", args.name_a] + (["--video"] if video["a"] else [])
    cmd_b = base + ["--token", args.token_b, "--name", args.name_b] + (["--video"] if video["b"] else [])
    for flag in ("debug", "no_dc_rescue"):
        if getattr(args, flag):
            cmd_a.append("--" + flag.replace("_", "-"))
            cmd_b.append("--" + flag.replace("_", "-"))
    await asyncio.gather(a.start(cmd_a), b.start(cmd_b))

    def c(name: str) -> str:
        return prefix + name

    try:
        pairs = [(a, b), (b, a)]

        def steady() -> bool:
            for me, other in pairs:
                if not me.find(lambda e: e.get("event") == "joined"):
                    return False
                if not me.find(lambda e, o=other: e.get("event") == "peer-joined" and e.get("peer") == o.peer_id):
                    return False
                if not me.find(lambda e, o=other: is_data(e, o.peer_id, "server", "broadcast")):
                    return False
                if not me.find(lambda e, o=other: e.get("event") == "state-change" and e.get("peer") == o.peer_id and e.get("to") == "connected"):
                    return False
                if not me.find(lambda e, o=other: is_data(e, o.peer_id, "p2p")):
                    return False
                if video[other.label] and not me.find(lambda e, o=other: e.get("event") == "first-frame" and e.get("peer") == o.peer_id):
                    return False
            return True

        def any_fatal() -> bool:
            return any(p.rc is not None or p.find(lambda e: e.get("event") == "error" and e.get("fatal")) for p in peers)

        if await wait_until(peers, lambda: steady() or any_fatal(), args.timeout) and not any_fatal():
            await asyncio.sleep(args.hold)  # let media and data flow for a while

        for me, other in pairs:
            tag = f"{me.label}({me.peer_id})"
            joined = me.find(lambda e: e.get("event") == "joined")
            report.check(c(f"joined-{tag}"), bool(joined and joined.get("peer") == me.peer_id), f"joined line {joined}")
            pj = me.find(lambda e, o=other: e.get("event") == "peer-joined" and e.get("peer") == o.peer_id)
            name = ((pj or {}).get("metadata") or {}).get("username")
            report.check(
                c(f"presence-{me.peer_id}-sees-{other.peer_id}"),
                bool(pj) and name == other.name,
                f"peer-joined {pj}" if pj else "no peer-joined",
            )
            d = me.find(lambda e, o=other: is_data(e, o.peer_id, "server", "broadcast"))
            report.check(
                c(f"server-data-{other.peer_id}-to-{me.peer_id}"),
                bool(d) and isinstance(d.get("data"), dict) and "seq" in d["data"]
                and (d.get("metadata") or {}).get("username") == other.name,
                f"got {d}" if d else "no broadcast data received",
            )
            conn = me.find(lambda e, o=other: e.get("event") == "state-change" and e.get("peer") == o.peer_id and e.get("to") == "connected")
            report.check(c(f"connected-{me.peer_id}-to-{other.peer_id}"), bool(conn), "RemotePeer never reached connected")
            ices = me.all(lambda e, o=other: e.get("event") == "ice" and e.get("peer") == o.peer_id)
            addrs = [x for ev in ices for x in ev.get("local", []) + ev.get("remote", [])]
            report.check(
                c(f"ice-loopback-only-{me.peer_id}"),
                bool(addrs) and all(x.startswith("127.0.0.1:") for x in addrs),
                f"candidates {addrs}" if addrs else "no candidates seen",
            )
            dco = me.find(lambda e, o=other: e.get("event") == "dc-open" and e.get("peer") == o.peer_id)
            report.check(c(f"dc-open-{me.peer_id}"), bool(dco) and dco.get("label") == "meshcall", f"dc-open {dco}")
            p2p = me.find(lambda e, o=other: is_data(e, o.peer_id, "p2p"))
            report.check(
                c(f"p2p-data-{other.peer_id}-to-{me.peer_id}"),
                bool(p2p) and isinstance(p2p.get("data"), dict) and "p2p_seq" in p2p["data"],
                f"got {p2p}" if p2p else "no data-channel message",
            )
            if video[other.label]:
                sa = me.find(lambda e, o=other: e.get("event") == "stream-added" and e.get("peer") == o.peer_id)
                report.check(
                    c(f"video-stream-added-{other.peer_id}-to-{me.peer_id}"),
                    bool(sa) and (sa.get("metadata") or {}).get("role") == "camera" and "video" in (sa.get("kinds") or []),
                    f"stream-added {sa}" if sa else "no stream-added",
                )
                ff = me.find(lambda e, o=other: e.get("event") == "first-frame" and e.get("peer") == o.peer_id)
                report.check(
                    c(f"video-first-frame-{other.peer_id}-to-{me.peer_id}"),
                    bool(ff) and (ff.get("width") or 0) > 0 and (ff.get("height") or 0) > 0,
                    f"first-frame {ff}" if ff else "no decoded frame",
                )

        # Timings, from the later of the two `joined` lines (unix ts, same machine).
        ja = a.find(lambda e: e.get("event") == "joined")
        jb = b.find(lambda e: e.get("event") == "joined")
        if ja and jb:
            t0 = max(ja["ts"], jb["ts"])
            for me, other in pairs:
                conn = me.find(lambda e, o=other: e.get("event") == "state-change" and e.get("peer") == o.peer_id and e.get("to") == "connected")
                if conn:
                    report.timing(f"{prefix}join->connected {me.peer_id}", (conn["ts"] - t0) * 1000)
                    report.timing(f"{prefix}peer-joined->connected {me.peer_id}", conn.get("since_peer_joined_ms"))
                dco = me.find(lambda e, o=other: e.get("event") == "dc-open" and e.get("peer") == o.peer_id)
                if dco:
                    report.timing(f"{prefix}join->dc-open {me.peer_id}", (dco["ts"] - t0) * 1000)
                ff = me.find(lambda e, o=other: e.get("event") == "first-frame" and e.get("peer") == o.peer_id)
                if ff:
                    report.timing(f"{prefix}join->first-frame {me.peer_id}", (ff["ts"] - t0) * 1000)
                rescue = me.find(lambda e, o=other: e.get("event") == "dc-rescue" and e.get("peer") == o.peer_id)
                if rescue:
                    print(f"INFO {prefix}{me.peer_id}: dc-rescue used (SDK 1.0.2 stranded data channel, see python_peer.py)", flush=True)

        # Server-routed direct messages and a P2P message, driven through stdin.
        if a.rc is None and b.rc is None:
            a.command({"cmd": "sendTo", "peer": b.peer_id, "data": {"direct": "from-" + a.peer_id}, "id": "d1"})
            b.command({"cmd": "sendTo", "peer": a.peer_id, "data": {"direct": "from-" + b.peer_id}, "id": "d2"})
            a.command({"cmd": "dc-send", "peer": b.peer_id, "data": {"dc": "hello-" + b.peer_id}, "id": "d3"})
            await wait_until(
                peers,
                lambda: bool(
                    b.find(lambda e: is_data(e, a.peer_id, "server", "direct"))
                    and a.find(lambda e: is_data(e, b.peer_id, "server", "direct"))
                    and b.find(lambda e: is_data(e, a.peer_id, "p2p") and (e.get("data") or {}).get("dc") == "hello-" + b.peer_id)
                ),
                10,
            )
        for me, other in pairs:
            d = me.find(lambda e, o=other: is_data(e, o.peer_id, "server", "direct"))
            report.check(
                c(f"direct-{other.peer_id}-to-{me.peer_id}"),
                bool(d) and (d.get("data") or {}).get("direct") == "from-" + other.peer_id
                and (d.get("metadata") or {}).get("username") == other.name,
                f"got {d}" if d else "no direct data",
            )
        dcs = b.find(lambda e: is_data(e, a.peer_id, "p2p") and isinstance(e.get("data"), dict) and e["data"].get("dc") == "hello-" + b.peer_id)
        report.check(c("dc-send-command"), bool(dcs), "stdin dc-send did not arrive")

        # With the SDK's immediate-teardown race (see reconnect_phase) a's RemotePeer for b only
        # recovers when b offers again, i.e. when the impolite b has media to send.
        do_reconnect = args.reconnect if args.reconnect is not None else video["b"]
        if do_reconnect:
            await reconnect_phase(args, a, b, video, report, c, prefix)
        elif args.reconnect is None:
            print(
                f"INFO {prefix}reconnect phase skipped: with no media on {b.peer_id} (the impolite side) the SDK "
                f"leaves {a.peer_id}'s RemotePeer closed after a WebSocket drop (pass --reconnect to see it)",
                flush=True,
            )

        # One side leaves through stdin; the other must see it go.
        if b.rc is None:
            b.command({"cmd": "leave"})
        await wait_until(peers, lambda: b.rc is not None and bool(a.find(lambda e: e.get("event") == "peer-left" and e.get("peer") == b.peer_id)), 10)
        report.check(
            c(f"leave-{b.peer_id}-exit-0"),
            b.rc == 0 and bool(b.find(lambda e: e.get("event") == "left")),
            f"rc={b.rc}",
        )
        pl = a.find(lambda e: e.get("event") == "peer-left" and e.get("peer") == b.peer_id)
        report.check(c(f"peer-left-{b.peer_id}-seen-by-{a.peer_id}"), bool(pl), "no peer-left")
        if a.rc is None:
            a.command({"cmd": "leave"})
        await wait_until(peers, lambda: a.rc is not None, 10)
        report.check(c(f"leave-{a.peer_id}-exit-0"), a.rc == 0, f"rc={a.rc}")

        for me, other in pairs:
            if not video[other.label]:
                continue
            left = me.find(lambda e: e.get("event") == "left") or {}
            frames = ((left.get("stats") or {}).get(other.peer_id) or {}).get("frames", 0)
            report.check(c(f"video-frames-flowing-{other.peer_id}-to-{me.peer_id}"), frames >= 10, f"only {frames} frames decoded")
            print(f"INFO {prefix}{me.peer_id} decoded {frames} frames from {other.peer_id}", flush=True)

        errors = [(p.peer_id, e) for p in peers for e in p.all(lambda e: e.get("event") == "error")]
        report.check(c("no-error-events"), not errors, "; ".join(f"{pid}: {e.get('message')}" for pid, e in errors)[:800])
    finally:
        await asyncio.gather(a.stop(), b.stop())


def index_after(p: PeerProc, start: int, pred: Callable[[dict[str, Any]], bool]) -> int | None:
    for i in range(start, len(p.events)):
        if pred(p.events[i]):
            return i
    return None


async def reconnect_phase(
    args: argparse.Namespace,
    a: PeerProc,
    b: PeerProc,
    video: dict[str, bool],
    report: Report,
    c: Callable[[str], str],
    prefix: str,
) -> None:
    """Peer a drops its WebSocket (stdin "reconnect": close 4000). The server sends b a
    presence `left` at once, so b gets peer-left a and later peer-joined a (a new RemotePeer),
    and b's SDK closes its pc to a right away. That teardown reaches a over the still-working
    UDP path during a's reconnect backoff (>= 0.5 s), so a's RemotePeer for b reads `closed`
    and the SDK's reconcile skips the swap for it (it treats it as gone). It recovers only
    because b's new RemotePeer offers again (b has media): a's SDK sees a non-stable (closed)
    pc, is polite, rebuilds and answers. The checks: same RemotePeer object on a, ends
    `connected`, data channel re-opened both ways, media re-flows. Because the swap was
    skipped, a does NOT re-send its track metadata: with --video a|both, b's new RemotePeer
    sees a's stream without `role` (reported as a FAIL: it is what a Rust survivor would see)."""
    peers = [a, b]
    if a.rc is not None or b.rc is not None:
        report.check(c("reconnect"), False, "a peer already exited")
        return
    ma, mb = len(a.events), len(b.events)
    a.command({"cmd": "reconnect", "id": "rc"})

    def is_state(e: dict[str, Any], peer: str | None, to: str) -> bool:
        return e.get("event") == "state-change" and e.get("peer") == peer and e.get("to") == to

    def dc_flow(me: PeerProc, mark: int, other: PeerProc) -> bool:
        i = index_after(me, mark, lambda e: e.get("event") == "dc-open" and e.get("peer") == other.peer_id)
        return i is not None and index_after(me, i, lambda e: is_data(e, other.peer_id, "p2p")) is not None

    def done() -> bool:
        ok = (
            index_after(a, ma, lambda e: is_state(e, None, "joined")) is not None
            and index_after(a, ma, lambda e: is_state(e, b.peer_id, "connected")) is not None
            and dc_flow(a, ma, b)
            and dc_flow(b, mb, a)
        )
        if video["b"]:
            ok = ok and index_after(a, ma, lambda e: e.get("event") == "first-frame" and e.get("peer") == b.peer_id) is not None
        if video["a"]:
            ok = ok and index_after(b, mb, lambda e: e.get("event") == "first-frame" and e.get("peer") == a.peer_id) is not None
        return ok or a.rc is not None or b.rc is not None

    await wait_until(peers, done, args.timeout)
    new_a, new_b = a.events[ma:], b.events[mb:]
    cmd = next((e for e in new_a if e.get("event") == "cmd-result" and e.get("cmd") == "reconnect"), None)
    report.check(c(f"reconnect-{a.peer_id}-command"), bool(cmd and cmd.get("ok")), f"cmd-result {cmd}")
    states = [(e.get("from"), e.get("to")) for e in new_a if e.get("event") == "state-change" and "peer" not in e]
    report.check(
        c(f"reconnect-{a.peer_id}-joined-reconnecting-joined"),
        ("joined", "reconnecting") in states and ("reconnecting", "joined") in states,
        f"MeteredPeer transitions {states}",
    )
    pj = a.find(lambda e: e.get("event") == "peer-joined" and e.get("peer") == b.peer_id) or {}
    remote_states = [e for e in new_a if e.get("event") == "state-change" and e.get("peer") == b.peer_id]
    rejoined = [e for e in new_a if e.get("event") == "peer-joined" and e.get("peer") == b.peer_id]
    left = [e for e in new_a if e.get("event") == "peer-left" and e.get("peer") == b.peer_id]
    report.check(
        c(f"reconnect-{a.peer_id}-same-remotepeer-{b.peer_id}"),
        bool(remote_states) and not rejoined and not left and all(e.get("obj") == pj.get("obj") for e in remote_states),
        f"peer-joined obj {pj.get('obj')}, after: states {[(e.get('to'), e.get('obj')) for e in remote_states]}, "
        f"peer-joined {len(rejoined)}, peer-left {len(left)}",
    )
    tos = [e.get("to") for e in remote_states]
    # The SDK's reconcile path shows reconnecting -> connected. When b's teardown (it saw a's
    # presence `left`) closes the old pc before a's SDK has noticed its own socket drop, a's
    # RemotePeer reads `closed` and b's fresh offer (new ufrag) makes a's SDK rebuild and
    # answer: closed -> connecting -> connected. Both end connected on a fresh pc.
    report.check(
        c(f"reconnect-{a.peer_id}-remote-{b.peer_id}-connected-again"),
        len(tos) >= 2 and tos[-1] == "connected" and any(t != "connected" for t in tos[:-1]),
        f"RemotePeer {b.peer_id} states {tos}",
    )
    print(f"INFO {prefix}{a.peer_id}'s RemotePeer {b.peer_id} after the drop: {' -> '.join(['connected'] + tos)}", flush=True)
    b_left = index_after(b, mb, lambda e: e.get("event") == "peer-left" and e.get("peer") == a.peer_id)
    b_rejoined = index_after(b, b_left or mb, lambda e: e.get("event") == "peer-joined" and e.get("peer") == a.peer_id)
    report.check(
        c(f"reconnect-{b.peer_id}-sees-{a.peer_id}-leave-and-rejoin"),
        b_left is not None and b_rejoined is not None,
        f"peer-left at {b_left}, peer-joined at {b_rejoined}",
    )
    report.check(c(f"reconnect-dc-reopened-{a.peer_id}"), dc_flow(a, ma, b), "no dc-open + p2p data after the reconnect")
    report.check(c(f"reconnect-dc-reopened-{b.peer_id}"), dc_flow(b, mb, a), "no dc-open + p2p data after the reconnect")
    for sender, receiver, mark in ((b, a, ma), (a, b, mb)):
        if not video[sender.label]:
            continue
        sa = index_after(receiver, mark, lambda e, s=sender: e.get("event") == "stream-added" and e.get("peer") == s.peer_id)
        ff = index_after(receiver, mark, lambda e, s=sender: e.get("event") == "first-frame" and e.get("peer") == s.peer_id)
        meta = (receiver.events[sa].get("metadata") or {}) if sa is not None else {}
        report.check(
            c(f"reconnect-video-{sender.peer_id}-to-{receiver.peer_id}"),
            sa is not None and ff is not None and meta.get("role") == "camera",
            f"stream-added {sa} (metadata {meta}), first-frame {ff}",
        )
    rem = [e for e in new_a + new_b if e.get("event") == "stream-removed"]
    if rem:
        print(
            f"INFO {prefix}stream-removed during the reconnect ({len(rem)}): the old pc was closed by the "
            "other side before the SDK's reconcile swap (see the RemotePeer states above)",
            flush=True,
        )
    if cmd is not None:
        t0 = cmd["ts"]
        conn = next((e for e in new_a if is_state(e, b.peer_id, "connected")), None)
        if conn:
            report.timing(f"{prefix}reconnect->connected {a.peer_id}", (conn["ts"] - t0) * 1000)
        j = next((e for e in new_b if is_state(e, a.peer_id, "connected")), None)
        if j:
            report.timing(f"{prefix}reconnect->connected {b.peer_id}", (j["ts"] - t0) * 1000)


async def main_async(args: argparse.Namespace) -> int:
    report = Report()
    for rnd in range(1, args.rounds + 1):
        await run_round(args, rnd, report)
    if args.rounds > 1:
        groups: dict[str, list[float]] = {}
        for name, values in report.timings.items():
            key = name.split("/", 1)[1] if "/" in name else name
            groups.setdefault(key, []).extend(values)
        for key, values in sorted(groups.items()):
            print(
                f"TIMING-SUMMARY {key}: median {statistics.median(values):.0f} ms, "
                f"min {min(values):.0f}, max {max(values):.0f} (n={len(values)})",
                flush=True,
            )
    print(f"{report.passed} passed, {report.failed} failed", flush=True)
    return 0 if report.failed == 0 else 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--room-prefix", required=True)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--token-a", required=True)
    p.add_argument("--token-b", required=True)
    p.add_argument("--id-a", default="alice")
    p.add_argument("--id-b", default="bob")
    p.add_argument("--name-a", default="Alice")
    p.add_argument("--name-b", default="Bob")
    p.add_argument("--video", choices=["a", "b", "both", "none"], default="b")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the steady state")
    p.add_argument("--log-dir", default=os.environ.get("TMPDIR", "/tmp"))
    p.add_argument(
        "--reconnect",
        dest="reconnect",
        action="store_true",
        default=None,
        help="force the WebSocket-drop phase (default: only when b sends video)",
    )
    p.add_argument("--no-reconnect", dest="reconnect", action="store_false", help="skip the WebSocket-drop phase")
    p.add_argument("--hold", type=float, default=2.0, help="seconds to keep the call up once steady")
    p.add_argument("--no-dc-rescue", action="store_true", help="pass --no-dc-rescue to both peers (shows the SDK bug)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
