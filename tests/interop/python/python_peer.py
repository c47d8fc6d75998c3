#!/usr/bin/env python3
"""A WebRTC peer built on the OFFICIAL Python SDK `metered-realtime[webrtc]` (aiortc),
for interop tests against `meshcall serve`.

    python_peer.py --server ws://127.0.0.1:PORT (--token JWT | --key KEY | --secret KID=SECRET)
                   --room ROOM --name NAME [--peer-id ID] [--token-ttl S] [--video] [--video-size 320x240]
                   [--duration SECONDS] [--interval SECONDS] [--no-dc] [--no-dc-rescue] [--debug]

It joins ROOM with `MeteredPeer`, and for every remote peer: the side with the lower peer id
opens a data channel "meshcall" (`remote.create_data_channel`), the other side receives it
(`DataChannelOpened`). Every second it broadcasts `{"seq":n,"from_name":NAME}` with
`peer.send` and sends `{"p2p_seq":n}` on every open data channel. With `--video` it publishes a
synthetic moving colour pattern (an aiortc `VideoStreamTrack`) with metadata
`{"role":"camera","label":…}`; received video tracks are decoded (aiortc hands out
`av.VideoFrame`s) and the first frame is reported with its size.

stdout: one JSON object per line, each with "event", "t_ms" (ms since start) and "ts" (unix
seconds, ms precision, for cross-process timing). Events, same contract as the Rust
`meshcall join --headless`:
  joined        {peer, room}
  peer-joined   {peer, metadata, polite, obj}   obj = id() of the RemotePeer (stable across reconnects)
  peer-left     {peer}
  state-change  {from, to}                (the MeteredPeer)
  state-change  {peer, from, to, obj}     (a RemotePeer; "to":"connected" adds since_peer_joined_ms)
  ice           {peer, local:[addr…], remote:[addr…]}   candidate addresses from both SDPs,
                                           printed once per connection when it is connected
  track         {peer, kind, stream, metadata}
  stream-added  {peer, stream, metadata, kinds}
  stream-removed{peer, stream}
  first-frame   {peer, stream, kind:"video", width, height, format} (a decoded frame)
                {peer, stream, kind:"audio", sample_rate, samples}
  dc-open       {peer, label, opener}
  dc-close      {peer, label}
  dc-rescue     {peer, message}           see PythonPeer.dc_rescue_watch (an SDK 1.0.2 bug)
  data          {peer, via:"server", kind:"broadcast"|"direct", data, metadata}
  data          {peer, via:"p2p", label, data}     (data-channel message; JSON-decoded if it is JSON)
  cmd-result    {cmd, ok, error?, id?}
  error         {fatal, message, peer?}
  left          {reason, stats:{peer: {frames (decoded video), p2p_rx, server_rx, audio_frames?}}}

stdin (optional, one JSON object per line):
  {"cmd":"send","data":…}            broadcast (peer.send)
  {"cmd":"sendTo","peer":ID,"data":…} direct, server-routed (peer.send_to)
  {"cmd":"dc-send","peer":ID,"data":…} on the data channel to ID (non-strings are JSON-encoded)
  {"cmd":"reconnect"}                test hook: close the SDK's WebSocket with 4000 -> reconnect + reconcile
  {"cmd":"leave"}                    close and exit
  An optional "id" is echoed in the cmd-result line. EOF on stdin is ignored.

Exit: 0 after a clean leave (stdin "leave", --duration, SIGTERM/SIGINT); 1 on a fatal SDK error
(join rejected, FatalError, the server closed us); 2 on bad arguments or an unsafe network.

Network safety: refuses to run when any interface has a non-loopback address (run it inside
`unshare -n`; MESHCALL_ALLOW_HOST_NETWORK=1 overrides). aiortc/aioice are restricted to loopback:
aioice 0.13 deliberately skips 127.0.0.1 when it gathers host candidates (so in a loopback-only
namespace it would gather none), and aiortc falls back to a public STUN server when no
iceServers are configured. This script therefore makes aioice gather on 127.0.0.1 only and
drops every non-loopback STUN/TURN server. The SDK itself is not modified.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from typing import Any

for _var in ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy"):
    os.environ.pop(_var, None)
    os.environ.pop(_var.upper(), None)
os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost,::1"

EXPECTED_SDK_VERSION = "1.0.2"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
DC_LABEL = "meshcall"


def die(msg: str, code: int = 2) -> None:
    print(f"python_peer: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


# ---------------------------------------------------------------- network safety


def non_loopback_addresses() -> list[str]:
    import ifaddr

    bad = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            addr = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            if addr.startswith("127.") or addr == "::1":
                continue
            bad.append(f"{adapter.nice_name}={addr}")
    return bad


def _is_loopback_host(host: str) -> bool:
    return host.startswith("127.") or host in ("localhost", "::1")


def restrict_ice_to_loopback() -> None:
    """Make aiortc gather only 127.0.0.1 host candidates and never use a non-loopback
    STUN/TURN server. Patches aioice/aiortc module functions, not the SDK."""
    import aioice.ice
    import aiortc.rtcicetransport as ice_transport

    def loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback_host_addresses
    ice_transport.RTCIceGatherer.getDefaultIceServers = classmethod(lambda cls: [])
    original_kwargs = ice_transport.connection_kwargs

    def loopback_connection_kwargs(servers: list[Any]) -> dict[str, Any]:
        kwargs = original_kwargs(servers)
        for key in ("stun_server", "turn_server"):
            server = kwargs.get(key)
            if server is not None and not _is_loopback_host(str(server[0])):
                print(f"python_peer: dropping non-loopback ICE server {key}", file=sys.stderr)
                kwargs.pop(key)
                if key == "turn_server":
                    for extra in ("turn_username", "turn_password", "turn_ssl", "turn_transport"):
                        kwargs.pop(extra, None)
        return kwargs

    ice_transport.connection_kwargs = loopback_connection_kwargs


# ---------------------------------------------------------------- helpers


def mint_token(kid: str, secret: str, sub: str, room: str, name: str, ttl: int = 3600) -> str:
    """HS256 JWT in the shape `meshcall token` mints (for --secret)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    claims = {
        "sub": sub,
        "exp": int(time.time()) + ttl,
        "iat": int(time.time()),
        "channels": [room],
        "permissions": ["publish", "subscribe", "presence", "send"],
        "peerMetadata": {"username": name},
    }
    signing_input = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + b64(
        json.dumps(claims, separators=(",", ":")).encode()
    )
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


_CANDIDATE_RE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ (\S+)", re.MULTILINE)


def sdp_candidates(sdp: str | None) -> list[str]:
    if not sdp:
        return []
    return sorted({f"{m.group(1)}:{m.group(2)}/{m.group(3)}" for m in _CANDIDATE_RE.finditer(sdp)})


class Out:
    """One JSON object per line on stdout."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def emit(self, obj: dict[str, Any]) -> None:
        obj["t_ms"] = round((time.monotonic() - self.start) * 1000.0, 1)
        obj["ts"] = round(time.time(), 3)
        try:
            line = json.dumps(obj, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            line = json.dumps({"event": obj.get("event"), "unserializable": repr(obj)})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def make_pattern_track(width: int, height: int) -> Any:
    """A synthetic camera: a moving luma ramp, a bright bar and a slowly cycling hue."""
    from aiortc import VideoStreamTrack
    from av import VideoFrame

    class PatternTrack(VideoStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            ramp = bytes((x * 255 // max(1, width - 1)) for x in range(width))
            self._ramp2 = ramp + ramp

        async def recv(self) -> Any:
            pts, time_base = await self.next_timestamp()
            frame = VideoFrame(width=width, height=height, format="yuv420p")
            n = self.count
            self.count += 1
            y_plane, u_plane, v_plane = frame.planes
            off = (n * 4) % width
            row = self._ramp2[off : off + width]
            pad = y_plane.line_size - width
            if pad:
                row += bytes(pad)
            bar_top = (n * 2) % height
            bar_rows = min(16, height - bar_top)
            bar = bytes([235]) * width + bytes(pad)
            y = row * bar_top + bar * bar_rows + row * (height - bar_top - bar_rows)
            y_plane.update(y)
            phase = (n // 3) % 256
            u_plane.update(bytes([phase]) * u_plane.buffer_size)
            v_plane.update(bytes([255 - phase]) * v_plane.buffer_size)
            frame.pts = pts
            frame.time_base = time_base
            return frame

    return PatternTrack()


# ---------------------------------------------------------------- the peer


class PythonPeer:
    def __init__(self, args: argparse.Namespace, out: Out) -> None:
        self.args = args
        self.out = out
        self.peer: Any = None
        self.done = asyncio.Event()
        self.exit_code = 0
        self.leave_reason = "done"
        self.we_are_closing = False
        self.channels: dict[str, Any] = {}  # remote id -> DataChannel wrapper (latest)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stats: dict[str, dict[str, int]] = {}
        self.peer_joined_at: dict[str, float] = {}
        self.dc_pc: dict[str, Any] = {}  # remote id -> the pc our latest channel was opened on
        self.video_track: Any = None

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def stat(self, peer_id: str, key: str, inc: int = 1) -> None:
        s = self.stats.setdefault(peer_id, {"frames": 0, "p2p_rx": 0, "server_rx": 0})
        s[key] = s.get(key, 0) + inc

    def fatal(self, message: str) -> None:
        self.out.emit({"event": "error", "fatal": True, "message": message})
        self.exit_code = 1
        self.leave_reason = "fatal"
        self.done.set()

    # ---- setup

    def build(self) -> Any:
        from metered_realtime import (
            Data,
            FatalError,
            Left,
            MediaStream,
            MeteredPeer,
            PeerJoined,
            PeerLeft,
            StateChange,
            StdlibLogger,
        )

        a = self.args
        kwargs: dict[str, Any] = {"url": a.server}
        if a.debug:
            kwargs["logger"] = StdlibLogger(logging.getLogger("metered_realtime"))
        if a.key:
            kwargs["api_key"] = a.key
        elif a.secret_pair is not None:
            kid, secret, sub = a.secret_pair

            async def token_provider() -> str:
                # Called on every (re)connect: a fresh token each time, so a short
                # --token-ttl exercises 4002 -> reconnect -> reconcile.
                return mint_token(kid, secret, sub, a.room, a.name, a.token_ttl)
        else:
            token = a.token

            async def token_provider() -> str:
                return token

        if not a.key:
            kwargs["token_provider"] = token_provider
        peer = MeteredPeer(**kwargs)
        self.peer = peer

        peer.on(StateChange, self.on_state_change)
        peer.on(PeerJoined, self.on_peer_joined)
        peer.on(PeerLeft, lambda ev: self.out.emit({"event": "peer-left", "peer": ev.peer.id}))
        peer.on(Data, self.on_data)
        peer.on(FatalError, lambda ev: self.fatal(f"FatalError: {ev.err}"))
        peer.on(Left, self.on_left)

        if a.video:
            width, height = a.video_size
            self.video_track = make_pattern_track(width, height)
            stream = MediaStream((self.video_track,))
            peer.add_stream(stream, {"role": "camera", "label": f"{a.name} synthetic camera"})
        return peer

    # ---- MeteredPeer events (sync handlers: run inline, nothing is missed)

    def on_state_change(self, ev: Any) -> None:
        self.out.emit({"event": "state-change", "from": ev.from_, "to": ev.to})
        if ev.from_ == "reconnecting" and ev.to == "joined":
            # Reconciled: survivors got a fresh pc. Re-open our channels on it now (not only
            # on `connected`: with no media on either side nothing else would negotiate).
            for remote in self.peer.remote_peers:
                if self.is_opener(remote.id) and remote.state != "closed" and self.dc_pc.get(remote.id) is not remote.pc:
                    self.open_channel(remote)

    def is_opener(self, rid: str) -> bool:
        my_id = self.peer.peer_id if self.peer is not None else None
        return (not self.args.no_dc) and my_id is not None and my_id < rid

    def on_left(self, ev: Any) -> None:
        if self.we_are_closing:
            return
        self.fatal(f"left by the SDK: {ev.reason}")

    def on_data(self, ev: Any) -> None:
        self.stat(ev.sender_peer_id, "server_rx")
        self.out.emit(
            {
                "event": "data",
                "peer": ev.sender_peer_id,
                "via": "server",
                "kind": ev.kind,
                "data": ev.data,
                "metadata": ev.sender_metadata,
            }
        )

    def on_peer_joined(self, ev: Any) -> None:
        from metered_realtime import (
            DataChannelOpened,
            IceCandidateError,
            NegotiationError,
            StateChange,
            StreamAdded,
            StreamRemoved,
            Track,
        )

        remote = ev.peer
        rid = remote.id
        self.peer_joined_at[rid] = time.monotonic()
        self.stats.setdefault(rid, {"frames": 0, "p2p_rx": 0, "server_rx": 0})
        # "obj" identifies the RemotePeer object: the SDK keeps it across a reconnect.
        self.out.emit(
            {"event": "peer-joined", "peer": rid, "metadata": remote.metadata, "polite": remote.polite, "obj": id(remote)}
        )
        opener = self.is_opener(rid)

        def on_state(sc: Any) -> None:
            line: dict[str, Any] = {"event": "state-change", "peer": rid, "from": sc.from_, "to": sc.to, "obj": id(remote)}
            if sc.to == "connected":
                line["since_peer_joined_ms"] = round((time.monotonic() - self.peer_joined_at[rid]) * 1000.0, 1)
            self.out.emit(line)
            if sc.to == "connected":
                pc = remote.pc
                local = pc.localDescription.sdp if pc.localDescription else None
                remote_sdp = pc.remoteDescription.sdp if pc.remoteDescription else None
                self.out.emit(
                    {"event": "ice", "peer": rid, "local": sdp_candidates(local), "remote": sdp_candidates(remote_sdp)}
                )
                # Channels die with the connection: after a reconcile swap or an internal
                # rebuild the pc is new, so the opener re-opens its channel on it.
                if self.is_opener(rid) and self.dc_pc.get(rid) is not pc:
                    self.open_channel(remote)

        def on_track(tr: Any) -> None:
            stream_id = tr.streams[0].id if tr.streams else None
            self.out.emit(
                {"event": "track", "peer": rid, "kind": tr.track.kind, "stream": stream_id, "metadata": tr.metadata}
            )
            self.spawn(self.consume_track(rid, stream_id, tr.track))

        def on_stream_added(sa: Any) -> None:
            self.out.emit(
                {
                    "event": "stream-added",
                    "peer": rid,
                    "stream": sa.stream.id,
                    "metadata": sa.metadata,
                    "kinds": [t.kind for t in sa.stream.get_tracks()],
                }
            )

        remote.on(StateChange, on_state)
        remote.on(Track, on_track)
        remote.on(StreamAdded, on_stream_added)
        remote.on(StreamRemoved, lambda sr: self.out.emit({"event": "stream-removed", "peer": rid, "stream": sr.stream.id}))
        remote.on(DataChannelOpened, lambda dco: self.wrap_channel(rid, dco.channel, opener=False))
        remote.on(NegotiationError, lambda ne: self.out.emit({"event": "error", "fatal": False, "peer": rid, "message": f"NegotiationError: {ne.err}"}))
        remote.on(IceCandidateError, lambda ie: self.out.emit({"event": "error", "fatal": False, "peer": rid, "message": f"IceCandidateError: {ie.err}"}))
        if opener:
            self.open_channel(remote)

    # ---- data channels

    def open_channel(self, remote: Any) -> None:
        self.dc_pc[remote.id] = remote.pc
        try:
            raw = remote.create_data_channel(DC_LABEL)
        except Exception as err:  # noqa: BLE001
            self.out.emit({"event": "error", "fatal": False, "peer": remote.id, "message": f"create_data_channel: {err}"})
            return
        dc = self.wrap_channel(remote.id, raw, opener=True)
        if not self.args.no_dc_rescue:
            self.spawn(self.dc_rescue_watch(remote, raw, dc))

    async def dc_rescue_watch(self, remote: Any, raw: Any, dc: Any) -> None:
        """Work around an SDK 1.0.2 bug (public API only). A data channel created before
        the first negotiation is never negotiated when this side then ANSWERS an offer
        without an m=application section (e.g. the impolite peer offered its camera
        first): aiortc creates `pc.sctp` inside createDataChannel, so the SDK's
        "pending data channel and no SCTP transport" follow-up check never fires, no
        follow-up offer is made, the channel stays "connecting" and, because the unused
        SCTP DTLS transport stays "new", the RemotePeer never leaves "connecting".
        Detect exactly that (stable, remote description without m=application) and
        re-create the channel: `create_data_channel` schedules an offer, which now
        carries the m=application section."""
        pc = remote.pc
        for _ in range(600):  # 60 s at most
            await asyncio.sleep(0.1)
            if raw.readyState != "connecting" or remote.state == "closed" or remote.pc is not pc:
                return
            rd = pc.remoteDescription
            if pc.signalingState == "stable" and rd is not None and "m=application" not in rd.sdp:
                self.out.emit(
                    {
                        "event": "dc-rescue",
                        "peer": remote.id,
                        "message": "data channel left un-negotiated after answering an offer without "
                        "m=application (SDK 1.0.2 bug); re-creating it to force an offer",
                    }
                )
                dc.close()
                self.open_channel(remote)
                return

    def wrap_channel(self, rid: str, raw: Any, *, opener: bool) -> Any:
        from metered_realtime import DataChannel, DCClose, DCMessage, DCOpen

        dc = DataChannel(raw)
        label = dc.label
        ticker: dict[str, asyncio.Task[Any] | None] = {"task": None}

        def opened(_ev: Any = None) -> None:
            if ticker["task"] is not None:
                return
            self.channels[rid] = dc
            self.out.emit({"event": "dc-open", "peer": rid, "label": label, "opener": opener})
            ticker["task"] = self.spawn(self.dc_ticker(rid, dc))

        def message(ev: Any) -> None:
            self.stat(rid, "p2p_rx")
            data: Any = ev.data
            if isinstance(data, bytes):
                self.out.emit({"event": "data", "peer": rid, "via": "p2p", "label": label, "bytes": len(data)})
                return
            try:
                data = json.loads(data)
            except ValueError:
                pass
            self.out.emit({"event": "data", "peer": rid, "via": "p2p", "label": label, "data": data})

        def closed(_ev: Any) -> None:
            if self.channels.get(rid) is dc:
                del self.channels[rid]
            task = ticker["task"]
            if task is not None:
                task.cancel()
            self.out.emit({"event": "dc-close", "peer": rid, "label": label})

        dc.on(DCOpen, opened)
        dc.on(DCMessage, message)
        dc.on(DCClose, closed)
        # A channel the remote opened arrives already open (aiortc emits `datachannel`
        # after the DCEP OPEN), so DCOpen never fires for it.
        if dc.ready_state == "open":
            opened()
        return dc

    async def dc_ticker(self, rid: str, dc: Any) -> None:
        seq = 0
        while True:
            seq += 1
            try:
                await dc.send(json.dumps({"p2p_seq": seq}, separators=(",", ":")))
            except Exception as err:  # noqa: BLE001
                if dc.ready_state == "open":
                    self.out.emit({"event": "error", "fatal": False, "peer": rid, "message": f"dc send: {err}"})
                return
            await asyncio.sleep(self.args.interval)

    # ---- media

    async def consume_track(self, rid: str, stream_id: str | None, track: Any) -> None:
        """Decode every frame of a received track (aiortc hands out av.VideoFrame /
        av.AudioFrame); report the first one and count video frames."""
        from aiortc.mediastreams import MediaStreamError

        kind = track.kind
        first = True
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            except Exception as err:  # noqa: BLE001
                self.out.emit({"event": "error", "fatal": False, "peer": rid, "message": f"{kind} recv: {err!r}"})
                return
            self.stat(rid, "frames" if kind == "video" else "audio_frames")
            if first:
                first = False
                line: dict[str, Any] = {"event": "first-frame", "peer": rid, "stream": stream_id, "kind": kind}
                if kind == "video":
                    line["width"] = getattr(frame, "width", 0)
                    line["height"] = getattr(frame, "height", 0)
                    line["format"] = str(getattr(getattr(frame, "format", None), "name", ""))
                else:
                    line["sample_rate"] = getattr(frame, "sample_rate", 0)
                    line["samples"] = getattr(frame, "samples", 0)
                self.out.emit(line)

    # ---- stdin commands

    def start_stdin_reader(self) -> None:
        loop = asyncio.get_running_loop()

        def reader() -> None:
            try:
                for line in sys.stdin:
                    loop.call_soon_threadsafe(self.on_command_line, line)
            except (OSError, ValueError):
                pass

        threading.Thread(target=reader, name="stdin", daemon=True).start()

    def on_command_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
                raise ValueError("expected an object with a string 'cmd'")
        except ValueError as err:
            self.out.emit({"event": "cmd-result", "cmd": None, "ok": False, "error": f"bad command: {err}"})
            return
        self.spawn(self.run_command(cmd))

    async def run_command(self, cmd: dict[str, Any]) -> None:
        name = cmd["cmd"]
        result: dict[str, Any] = {"event": "cmd-result", "cmd": name, "ok": True}
        if "id" in cmd:
            result["id"] = cmd["id"]
        try:
            if name == "send":
                await self.peer.send(cmd.get("data"))
            elif name == "sendTo":
                await self.peer.send_to(cmd.get("peer"), cmd.get("data"))
            elif name == "dc-send":
                dc = self.channels.get(cmd.get("peer"))
                if dc is None:
                    raise RuntimeError(f"no open data channel to {cmd.get('peer')!r}")
                data = cmd.get("data")
                await dc.send(data if isinstance(data, str) else json.dumps(data, separators=(",", ":")))
            elif name == "reconnect":
                # Test hook (SDK internals): drop the WebSocket with 4000, the code the
                # SDK's own inactivity watchdog uses, so it reconnects and reconciles.
                ws = getattr(getattr(self.peer, "_client", None), "_ws", None)
                if ws is None:
                    raise RuntimeError("not connected")
                await ws.close(code=4000, reason="python_peer reconnect command")
            elif name == "leave":
                self.leave_reason = "leave command"
                self.done.set()
            else:
                raise ValueError(f"unknown command {name!r}")
        except Exception as err:  # noqa: BLE001
            result["ok"] = False
            result["error"] = f"{type(err).__name__}: {err}"
        self.out.emit(result)

    # ---- main

    async def run(self) -> int:
        a = self.args
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal)
            except (NotImplementedError, RuntimeError):
                pass
        peer = self.build()
        self.start_stdin_reader()
        try:
            await peer.join(a.room, include_sender_metadata=True)
        except Exception as err:  # noqa: BLE001
            self.out.emit({"event": "error", "fatal": True, "message": f"join failed: {type(err).__name__}: {err}"})
            self.we_are_closing = True
            await peer.close()
            return 1
        self.out.emit({"event": "joined", "peer": peer.peer_id, "room": a.room, "polite_rule": "local<remote"})
        deadline = loop.time() + a.duration if a.duration is not None else None
        seq = 0
        while not self.done.is_set():
            timeout = a.interval
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - loop.time()))
            try:
                await asyncio.wait_for(self.done.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            if self.done.is_set():
                break
            if deadline is not None and loop.time() >= deadline:
                self.leave_reason = "duration"
                break
            if peer.state == "joined":
                seq += 1
                self.spawn(self.broadcast(seq))
        self.we_are_closing = True
        for task in list(self.tasks):
            task.cancel()
        try:
            await asyncio.wait_for(peer.close(), 10)
        except Exception as err:  # noqa: BLE001
            self.out.emit({"event": "error", "fatal": False, "message": f"close: {err!r}"})
        if self.video_track is not None:
            self.video_track.stop()
        self.out.emit({"event": "left", "reason": self.leave_reason, "stats": self.stats})
        return self.exit_code

    async def broadcast(self, seq: int) -> None:
        try:
            await self.peer.send({"seq": seq, "from_name": self.args.name})
        except Exception as err:  # noqa: BLE001
            self.out.emit({"event": "error", "fatal": False, "message": f"send: {type(err).__name__}: {err}"})

    def _on_signal(self) -> None:
        self.leave_reason = "signal"
        self.done.set()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Official Python SDK WebRTC peer for meshcall interop tests")
    p.add_argument("--server", required=True, help="ws://127.0.0.1:PORT (origin; the SDK adds /v1)")
    auth = p.add_mutually_exclusive_group(required=True)
    auth.add_argument("--token", help="a JWT")
    auth.add_argument("--key", help="a publishable key")
    auth.add_argument("--secret", help="KID=SECRET: mint an HS256 JWT locally (sub = --peer-id or the lowercased name)")
    p.add_argument("--room", required=True)
    p.add_argument("--name", required=True, help="display name (peerMetadata.username when minting)")
    p.add_argument("--peer-id", help="peer id when minting with --secret")
    p.add_argument(
        "--token-ttl",
        type=int,
        default=3600,
        help="with --secret: lifetime of each minted token (a fresh one per connect; short = 4002 reconnects)",
    )
    p.add_argument("--video", action="store_true", help="publish a synthetic camera with {'role':'camera'}")
    p.add_argument("--video-size", default="320x240", help="WIDTHxHEIGHT of the synthetic camera")
    p.add_argument("--duration", type=float, help="leave cleanly after this many seconds")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between data messages")
    p.add_argument("--no-dc", action="store_true", help="never open a data channel (still accepts them)")
    p.add_argument(
        "--no-dc-rescue",
        action="store_true",
        help="do not work around the SDK bug that strands a data channel opened before answering a media-only offer",
    )
    p.add_argument("--debug", action="store_true", help="SDK and aiortc logs on stderr")
    a = p.parse_args(argv)
    m = re.fullmatch(r"wss?://(127\.0\.0\.1|localhost):(\d+)/?", a.server)
    if not m:
        die("--server must be ws://127.0.0.1:PORT or ws://localhost:PORT (loopback only)")
    a.server = a.server.rstrip("/")
    try:
        w, h = (int(x) for x in a.video_size.lower().split("x"))
        if w < 16 or h < 16 or w % 2 or h % 2:
            raise ValueError
        a.video_size = (w, h)
    except ValueError:
        die("--video-size must be WIDTHxHEIGHT with even sides >= 16")
    a.secret_pair = None
    if a.secret:
        kid, sep, secret = a.secret.partition("=")
        if not sep or not kid or not secret:
            die("--secret must be KID=SECRET")
        sub = a.peer_id or re.sub(r"[^a-z0-9]", "", a.name.lower()) or "python"
        a.secret_pair = (kid, secret, sub)
    if a.token_ttl < 2:
        die("--token-ttl must be >= 2")
    if a.duration is not None and a.duration <= 0:
        die("--duration must be > 0")
    if a.interval <= 0:
        die("--interval must be > 0")
    return a


def main() -> None:
    args = parse_args(sys.argv[1:])
    bad = non_loopback_addresses()
    if bad and os.environ.get("MESHCALL_ALLOW_HOST_NETWORK") != "1":
        die(
            "refusing to run WebRTC with non-loopback interfaces up ("
            + ", ".join(bad)
            + "); run inside `unshare -n` (or set MESHCALL_ALLOW_HOST_NETWORK=1)"
        )
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        import metered_realtime

        import aiortc  # noqa: F401
    except ImportError as err:
        die(f"cannot import the SDK with its webrtc extra ({err}); run tests/interop/python/setup.sh")
    if metered_realtime.__version__ != EXPECTED_SDK_VERSION:
        print(
            f"python_peer: warning: metered-realtime {metered_realtime.__version__}, expected {EXPECTED_SDK_VERSION}",
            file=sys.stderr,
        )
    restrict_ice_to_loopback()
    out = Out()
    code = asyncio.run(PythonPeer(args, out).run())
    sys.exit(code)


if __name__ == "__main__":
    main()
