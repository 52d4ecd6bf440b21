"""The load generator: simulated headsets and one teacher driving any target (the box, the
Django Channels peer, the floor) with the same clients and the same workloads.

A target is a dict: `name`, `teacher_url` and `headset_urls` (WebSocket URLs with their
`?token=`), and `pids` (server processes whose CPU and memory are read from /proc). Every
target speaks the box's messages: `welcome`, `state`, teacher `command`, `time`, `event`.

The coordinating process (the caller of `run_workload`) hosts the teacher and measures;
headsets live in `procs` worker processes (multiprocessing, spawn). Latency is the send
instant of a command to the receive instant of its `state` at each headset: when its bytes
reached the headset's socket (the kernel's timestamp, see wsclient.py), both on
CLOCK_MONOTONIC, which every process on the machine shares; `read_*` figures are to when the
worker process read them instead. A command is a `seek` whose
`position_ms` is unique in the run: that value comes back as the state's
`anchor_position_ms` and pairs each delivery with its command.

    python -m bench.loadgen --target t.json --workload w1 --n 30 [--procs 2]

Every loop is bounded in count and time; traffic is loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import math
import multiprocessing
import os
import random
import socket
import statistics
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from bench import wsclient

CONNECT_PARALLEL = 50  # connects in flight per worker (W1..W4): a class powering on
CONNECT_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 10.0  # after the last command, how long deliveries may still arrive
# W1 starts with a train this long that is not counted: a server's first commands after start
# pay what it pays once per boot (connections opened, statements compiled, the interpreter's
# warm-up), and with 50-100 commands x 30 headsets the slowest command alone is the p99.
W1_WARMUP_COMMANDS = 5
STORM_TIMEOUT_S = 30.0
PHASE_MAX_S = 120.0  # no phase runs longer, whatever its parameters
IDLE_WAIT_S = 20.0  # longest wait for the server to go idle after the headsets connected
CAPACITY_P99_MS = 100.0  # "sustained" = p99 at most this
# Commands per second one teacher connection sends at most: under the box's flood bound (about
# 100 frames/s per connection, then close 1008; docs/headset-protocol.md). A faster train
# (the capacity ramp's top steps) goes round several connections of the teacher.
TEACHER_RATE_MAX = 80.0
WORKER_REPLY_S = 180.0  # longest a worker step takes: connecting 1000 headsets on a busy box
TIME_SAMPLES = 20  # per headset for clock sync on loopback (the box answers bursts of 32)
TIME_SAMPLES_JITTER = 40  # through the jitter proxy: 4 s of samples at 10/s
CLK_TCK = os.sysconf("SC_CLK_TCK")

_decode = msgspec.json.Decoder().decode


class Anchor(msgspec.Struct):
    anchor_position_ms: float = -1


class Frame(msgspec.Struct):
    """The fields a headset reads from any server frame; the rest is skipped unparsed, which
    keeps the generator's own cost per delivery (it shares the cores with the server) low."""

    type: str = ""
    anchor_position_ms: float = -1
    status: str | None = None
    rev: int = 0
    anchor_server_ms: float = 0
    session: Anchor | None = None
    id: int | str | None = None
    t0: float = 0
    t1: float = 0
    t2: float = 0


_decode_frame = msgspec.json.Decoder(Frame).decode


# ---------------------------------------------------------------- /proc readings


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pctl(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def via_proxy(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


# ---------------------------------------------------------------- headsets (worker side)


class Headset:
    """One simulated headset connection and what it has received."""

    def __init__(self, index: int, url: str) -> None:
        self.index = index
        self.url = url
        self.ws: wsclient.WsClient | None = None
        self.welcomed: asyncio.Future[None] | None = None
        self.pending_time: dict[int, asyncio.Future[tuple[float, float, float, float]]] = {}
        self.offset_ms = 0.0  # server ms - local wall ms, from `time` exchanges
        self.seq = 0
        self.stream = base64.urlsafe_b64encode(os.urandom(9)).decode()


class Worker:
    def __init__(self, conn: Connection, start_index: int, urls: list[str]) -> None:
        self.conn = conn
        self.headsets = [Headset(start_index + i, u) for i, u in enumerate(urls)]
        # (headset, key, arrived at its socket, read by this process): monotonic clock
        self.receipts: list[tuple[int, int, float, float]] = []
        self.starts: list[tuple[int, int, float, float, float]] = []  # W6 play receipts
        self.count_from = 0
        self.count_to = -1
        self.counted = 0
        self.acks = 0
        self.errors = 0
        self.chatter: list[asyncio.Task[None]] = []
        self.chatter_sent = 0
        self.storm_key: int | None = None
        self.storm_done: dict[int, float] = {}
        self.refused: dict[str, int] = {}  # close code -> headsets refused a welcome
        self.storm_expected = 1 << 30  # known once the reconnects are done
        self.storm_all = asyncio.Event()

    # -- connections

    async def open(self, hs: Headset) -> bool:
        """Connected = admitted: the server has sent its `welcome` (the box accepts the upgrade
        first and checks the token after, as PROTOCOL.md requires)."""
        hs.welcomed = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                hs.ws = await wsclient.connect(
                    hs.url, lambda data, now: self.on_frame(hs, data, now)
                )
            await asyncio.wait(
                (hs.welcomed, hs.ws.closed),
                timeout=CONNECT_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except (TimeoutError, OSError):
            hs.ws = None
            return False
        if not hs.welcomed.done():
            code = str(hs.ws.closed.result()) if hs.ws.closed.done() else "timeout"
            self.refused[code] = self.refused.get(code, 0) + 1
            hs.ws.close()
            hs.ws = None
            return False
        return True

    async def connect_all(self, parallel: int | None) -> tuple[int, int]:
        gate = asyncio.Semaphore(parallel or len(self.headsets) or 1)

        async def one(hs: Headset) -> bool:
            async with gate:
                return await self.open(hs)

        done = await asyncio.wait_for(
            asyncio.gather(*(one(h) for h in self.headsets)), CONNECT_TIMEOUT_S * 3
        )
        ok = sum(done)
        return ok, len(done) - ok

    def on_frame(self, hs: Headset, data: bytes, now: float) -> None:
        """One text frame at a headset; `now` is when its bytes reached the headset's socket."""
        try:
            frame = _decode_frame(data)
        except msgspec.DecodeError:  # ValidationError included
            self.errors += 1
            return
        kind = frame.type
        if kind == "state":
            key = int(frame.anchor_position_ms)
            self.receipts.append((hs.index, key, now, hs.ws.read_at if hs.ws else now))
            if self.count_from <= key <= self.count_to:
                self.counted += 1
            if frame.status == "playing":
                wall = time.time() * 1000
                self.starts.append(
                    (hs.index, frame.rev, frame.anchor_server_ms, wall, hs.offset_ms)
                )
            self.storm_check(hs, key, now)
        elif kind == "welcome":
            anchor = frame.session.anchor_position_ms if frame.session is not None else -1
            self.storm_check(hs, int(anchor), now)
            if hs.welcomed is not None and not hs.welcomed.done():
                hs.welcomed.set_result(None)
        elif kind == "time":
            fut = hs.pending_time.pop(frame.id, None) if isinstance(frame.id, int) else None
            if fut is not None and not fut.done():
                fut.set_result((frame.t0, frame.t1, frame.t2, time.time() * 1000))
        elif kind == "event_ack":
            self.acks += 1
        elif kind == "error":
            self.errors += 1

    def storm_check(self, hs: Headset, key: int, now: float) -> None:
        if self.storm_key is not None and key >= self.storm_key and hs.index not in self.storm_done:
            self.storm_done[hs.index] = now
            if len(self.storm_done) >= self.storm_expected:
                self.storm_all.set()

    async def close_all(self) -> None:
        for hs in self.headsets:
            if hs.ws is not None:
                hs.ws.close()
        await asyncio.sleep(0.1)  # let the close frames go out

    # -- behaviours

    async def sync_clock(self, hs: Headset, samples_n: int, spacing_s: float) -> None:
        """Clock offset to the server from `time` exchanges, as a headset app keeps estimating
        it: the midpoint between the lowest-delay bound of each direction. Requests go out
        every `spacing_s` without waiting for answers (each answer carries its own t0..t3),
        so a sample's round trip through the jitter proxy does not stretch the schedule."""
        if hs.ws is None:
            return
        loop = asyncio.get_running_loop()
        replies: list[asyncio.Future[tuple[float, float, float, float]]] = []
        for i in range(samples_n):
            fut: asyncio.Future[tuple[float, float, float, float]] = loop.create_future()
            hs.pending_time[i] = fut
            if not hs.ws.send_text(json.dumps({"type": "time", "id": i, "t0": time.time() * 1000})):
                break
            replies.append(fut)
            await asyncio.sleep(spacing_s)
        done, _ = await asyncio.wait(replies, timeout=2.0) if replies else (set(), set())
        hs.pending_time.clear()
        # (t1 - t0, t2 - t3): offset + up delay, offset - down delay
        samples = [(t1 - t0, t2 - t3) for t0, t1, t2, t3 in (f.result() for f in done)]
        if samples:
            # Each direction filtered on its own: the smallest up delay and the smallest down
            # delay seen (the floor of each path) need not come from the same exchange.
            up = min(a for a, _ in samples)
            down = max(b for _, b in samples)
            hs.offset_ms = (up + down) / 2

    async def chat(self, hs: Headset, until: float) -> None:
        """status 10 Hz + gaze events 20 Hz, as a headset in a lesson sends them."""
        tick = 0
        next_at = time.monotonic()
        while hs.ws is not None and hs.ws.open and time.monotonic() < until:
            hs.seq += 1
            event = {
                "type": "event",
                "stream": hs.stream,
                "seq": hs.seq,
                "kind": "gaze",
                "t_ms": int(time.time() * 1000),
                "lesson_id": None,
                "data": {"x": random.random(), "y": random.random(), "z": 1.0},
            }
            if not hs.ws.send_text(json.dumps(event)):
                return
            self.chatter_sent += 1
            if tick % 2 == 0:
                status = {
                    "type": "status",
                    "battery": 0.8,
                    "app": "com.example.lesson",
                    "playing": True,
                    "position_ms": tick * 50,
                    "view": {"yaw": random.random()},
                }
                if not hs.ws.send_text(json.dumps(status)):
                    return
                self.chatter_sent += 1
            tick += 1
            next_at += 0.05
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def storm(self, key: int) -> dict[str, Any]:
        """Drop every connection at once (TCP closed, no close frame) and reconnect at once."""
        self.storm_key, self.storm_done = key, {}
        t_drop = time.monotonic()
        for hs in self.headsets:
            if hs.ws is not None:
                hs.ws.drop()
        self.storm_all = asyncio.Event()
        ok, failed = await self.connect_all(parallel=None)
        self.storm_expected = ok
        if len(self.storm_done) >= ok:
            self.storm_all.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.storm_all.wait(), STORM_TIMEOUT_S)
        done = dict(self.storm_done)
        self.storm_key = None
        return {"t_drop": t_drop, "done": list(done.values()), "connected": ok, "failed": failed}

    # -- the command loop with the coordinator

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ok, failed = await self.connect_all(CONNECT_PARALLEL)
        self.conn.send({"op": "ready", "connected": ok, "failed": failed, "refused": self.refused})
        while True:
            req = await loop.run_in_executor(None, self.conn.recv)
            op = req["op"]
            if op == "count":
                self.count_from, self.count_to = req["first"], req["last"]
                first, last = req["first"], req["last"]
                self.counted = sum(1 for _, k, _, _ in self.receipts if first <= k <= last)
                self.conn.send(self.counted)
            elif op == "poll":
                self.conn.send(self.counted)
            elif op == "collect":
                self.conn.send(
                    {
                        "receipts": self.receipts,
                        "starts": self.starts,
                        "acks": self.acks,
                        "errors": self.errors,
                        "chatter_sent": self.chatter_sent,
                        "open": sum(1 for h in self.headsets if h.ws is not None and h.ws.open),
                    }
                )
                self.receipts.clear()  # readers hold these lists: empty in place
                self.starts.clear()
            elif op == "sync":
                n, spacing = req["samples"], req["spacing_s"]
                await asyncio.gather(*(self.sync_clock(h, n, spacing) for h in self.headsets))
                self.conn.send("ok")
            elif op == "chatter":
                until = time.monotonic() + min(req["seconds"], PHASE_MAX_S)
                self.chatter = [asyncio.create_task(self.chat(h, until)) for h in self.headsets]
                self.conn.send("ok")
            elif op == "chatter_stop":
                for task in self.chatter:
                    task.cancel()
                self.conn.send("ok")
            elif op == "storm":
                self.conn.send(await self.storm(req["key"]))
            elif op == "close":
                await self.close_all()
                self.conn.send("ok")
                return


def worker_main(conn: Connection, start_index: int, urls: list[str]) -> None:
    with collector_paused():
        asyncio.run(Worker(conn, start_index, urls).run())


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a workload runs: a pass over the growing receipt
    lists would stall a generator process for milliseconds, and that stall would be read as
    the server's latency. What a run leaves is collected after it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


# ---------------------------------------------------------------- the stalled headset (W4)


async def open_stalled(url: str) -> tuple[socket.socket, float]:
    """A headset that completes the WebSocket handshake, reads its welcome, then never reads
    again (a tiny receive buffer so the box sees the stall quickly)."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (parts.hostname or "127.0.0.1", parts.port or 80))
    key = base64.b64encode(os.urandom(16)).decode()
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    got = b""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in got and time.monotonic() < deadline:
        got += await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
    await asyncio.sleep(0.3)  # let the welcome arrive; it stays unread
    return sock, time.monotonic()


def released(sock: socket.socket, server_port: int | None) -> bool:
    """Whether the server let go of the stalled connection. Its close frame and FIN wait
    behind the unread bytes, so the client end may stay "established" for good; but a socket
    the server process closed is an orphan in /proc/net/tcp (inode 0), or is gone (reset)."""
    try:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != 1:
            return True  # reset or closed under us
        client_port = sock.getsockname()[1]
    except OSError:
        return True
    if server_port is None:
        return False
    want_local, want_remote = f":{server_port:04X}", f":{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(want_local) and fields[2].endswith(want_remote):
                return fields[9] == "0"
    return True


async def server_idle(pid: int | None, limit_s: float = IDLE_WAIT_S) -> float | None:
    """Wait (bounded) until the server's CPU use falls below 10 % of a core over 0.5 s, so
    work left over from connecting (admission, attendance writes) is not measured as fan-out."""
    if pid is None:
        return None
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        before = cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if cpu_seconds(pid) - before < 0.05:
            break
    return round(time.monotonic() - t0, 1)


# ---------------------------------------------------------------- the coordinator


def teachers_for(rate: float) -> int:
    """How many connections of the teacher a train at `rate` commands/s goes round."""
    return max(1, math.ceil(rate / TEACHER_RATE_MAX))


class Coordinator:
    def __init__(self, target: dict[str, Any], n: int, procs: int) -> None:
        self.target = target
        self.n = n
        self.procs = max(1, min(procs, n))
        self.pipes: list[Connection] = []
        self.children: list[multiprocessing.process.BaseProcess] = []
        # The teacher speaks through the headsets' lean client too: it shares the generator's
        # core with them, and aiohttp's client spent ~100 us per state and result it received.
        self.teachers: list[wsclient.WsClient] = []
        self.teacher_errors: list[Any] = []
        # Keys are seek positions: unique per run and below the box's 24 h position bound.
        self.next_key = random.randrange(1, 40) * 1_000_000
        self.sent: dict[int, float] = {}
        self.headset_indexes: list[int] = []
        self.latencies: list[float] = []  # the last train's, for workloads pooling trains

    async def ask(self, req: dict[str, Any]) -> list[Any]:
        for p in self.pipes:
            p.send(req)
        return [await self.reply(p) for p in self.pipes]

    async def reply(self, pipe: Any) -> Any:
        """A worker's answer, bounded: a worker that died (or never started) fails the run
        instead of hanging it."""
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, pipe.poll, WORKER_REPLY_S)
        if not ready:
            raise TimeoutError(f"a headset worker gave no answer within {WORKER_REPLY_S} s")
        return pipe.recv()

    async def start(self, urls: list[str]) -> dict[str, Any]:
        ctx = multiprocessing.get_context("spawn")
        per = -(-len(urls) // self.procs)
        self.headset_indexes = list(range(len(urls)))
        for i in range(self.procs):
            chunk = urls[i * per : (i + 1) * per]
            if not chunk:
                continue
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, i * per, chunk), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.children.append(proc)
        t0 = time.monotonic()
        ready = [await self.reply(p) for p in self.pipes]
        await self.connect_teachers(1)
        return {
            "connected": sum(r["connected"] for r in ready),
            "failed": sum(r["failed"] for r in ready),
            "refused": {k: v for r in ready for k, v in r["refused"].items()},
            "connect_s": round(time.monotonic() - t0, 2),
        }

    async def connect_teachers(self, count: int) -> None:
        """At least `count` connections of the teacher, each welcomed."""
        while len(self.teachers) < count:
            welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            url = self.target["teacher_url"]
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self.teachers.append(await wsclient.connect(url, self.on_teacher(welcomed)))
                await welcomed

    def on_teacher(self, welcomed: asyncio.Future[None]) -> wsclient.TextHandler:
        """What one teacher connection does with a frame: its first is the welcome; errors and
        failed command results are kept."""

        def on_text(data: bytes, _now: float) -> None:
            if not welcomed.done():
                welcomed.set_result(None)
            elif b'"error"' in data:
                with contextlib.suppress(msgspec.DecodeError):
                    frame = _decode(data)
                    # `error` frames, and command results with ok=false (the box's `result`)
                    if frame.get("type") == "error" or frame.get("ok") is False:
                        self.teacher_errors.append(frame)

        return on_text

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError, EOFError, OSError):
            await asyncio.wait_for(self.ask({"op": "close"}), 30)
        for proc in self.children:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        for teacher in self.teachers:
            teacher.close()

    def command(self, action: str, via: int = 0, **fields: Any) -> None:
        """Send one command on the teacher's connection number `via`."""
        teacher = self.teachers[via]
        self.next_key += 1
        frame = {
            "type": "command",
            "id": self.next_key,
            "session_id": self.target["session_id"],
            "action": action,
            **fields,
        }
        if not teacher.send_text(json.dumps(frame)):
            closed = teacher.closed
            raise ConnectionError(
                f"the teacher's connection is gone (close code "
                f"{closed.result() if closed.done() else None} {teacher.close_reason!r})"
            )

    async def seek_train(self, count: int, rate: float) -> tuple[int, int]:
        """`count` seeks at `rate` per second on a fixed schedule, round as many connections of
        the teacher as that rate needs (`TEACHER_RATE_MAX`); returns the key range."""
        connections = teachers_for(rate)  # (connected by fanout, outside the train's figures)
        first = self.next_key + 1
        await self.ask({"op": "count", "first": first, "last": first + count - 1})
        t0 = time.monotonic()
        for i in range(count):
            due = t0 + i / rate
            # (a train behind its schedule still yields once per command: the teacher's
            # answers are read in between)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() - t0 > PHASE_MAX_S:
                break
            key = self.next_key + 1
            self.sent[key] = time.monotonic()
            self.command("seek", via=i % connections, position_ms=key)
        return first, self.next_key

    async def drain(self, expected: int, within_s: float = DRAIN_TIMEOUT_S) -> float:
        """Wait until `expected` deliveries of the current train arrived (or the timeout)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if sum(await self.ask({"op": "poll"})) >= expected:
                break
            await asyncio.sleep(0.02)
        return time.monotonic()

    async def collect(self) -> dict[str, Any]:
        parts = await self.ask({"op": "collect"})
        return {
            "receipts": [r for p in parts for r in p["receipts"]],
            "starts": [s for p in parts for s in p["starts"]],
            "acks": sum(p["acks"] for p in parts),
            "errors": sum(p["errors"] for p in parts),
            "chatter_sent": sum(p["chatter_sent"] for p in parts),
            "open": sum(p["open"] for p in parts),
        }

    def pids(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.target.get("pids", {}).items()}

    def cpu(self) -> dict[str, float]:
        out = {k: cpu_seconds(pid) for k, pid in self.pids().items()}
        out["generator"] = cpu_seconds(os.getpid()) + sum(
            cpu_seconds(p.pid) for p in self.children if p.pid
        )
        return out

    async def fanout(
        self, count: int, rate: float, drain_s: float = DRAIN_TIMEOUT_S
    ) -> dict[str, Any]:
        """One train of seeks; latency of every (command, headset) delivery."""
        await self.connect_teachers(teachers_for(rate))  # (not inside the train's figures)
        await self.collect()  # forget what came before
        cpu0, t0 = self.cpu(), time.monotonic()
        first, last = await self.seek_train(count, rate)
        t_last_send = time.monotonic()
        expected = self.n * (last - first + 1)
        t_end = await self.drain(expected, drain_s)
        cpu1 = self.cpu()
        got = await self.collect()
        seen: set[tuple[int, int]] = set()
        newest: dict[int, int] = {}  # headset -> highest key of this train it received
        lat: list[float] = []
        lat_read: list[float] = []  # to when this generator's process read them
        t_last_recv = t0
        for hs, key, t, t_read in got["receipts"]:
            if first <= key <= last and (hs, key) not in seen:
                seen.add((hs, key))
                lat.append((t - self.sent[key]) * 1000)
                lat_read.append((t_read - self.sent[key]) * 1000)
                t_last_recv = max(t_last_recv, t)
                newest[hs] = max(newest.get(hs, key), key)
        # A state a headset never got although it got a newer one was superseded (a server
        # may coalesce a backlog: newest rev wins); one with nothing newer after it is lost.
        missing = expected - len(lat)
        lost = sum(last - newest.get(hs, first - 1) for hs in self.headset_indexes)
        cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 3) for k in cpu1}
        self.latencies = lat
        span = max(t_last_recv, t_last_send) - t0
        return {
            "commands": last - first + 1,
            "rate_hz": rate,
            "deliveries": len(lat),
            "expected": expected,
            "superseded": missing - lost,
            "lost": lost,
            "p50_ms": round(pctl(lat, 50), 2),
            "p99_ms": round(pctl(lat, 99), 2),
            "max_ms": round(max(lat), 2) if lat else None,
            "read_p50_ms": round(pctl(lat_read, 50), 2),
            "read_p99_ms": round(pctl(lat_read, 99), 2),
            "tail_after_last_command_s": round(t_last_recv - t_last_send, 3),
            "deliveries_per_s": round(len(lat) / span, 1) if span > 0 else None,
            "cpu_s": cpu,
            "wall_s": round(t_end - t0, 2),
            "teacher_errors": len(self.teacher_errors),
            "teacher_error_sample": self.teacher_errors[-1] if self.teacher_errors else None,
        }


# ---------------------------------------------------------------- workloads


async def w1(co: Coordinator, opts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pids = co.pids()
    if "server" in pids:
        out["rss_connected_mb"] = round(rss_mb(pids["server"]), 1)
    drain_s = opts.get("drain_s", DRAIN_TIMEOUT_S)
    rate = opts.get("rate", 20.0)
    warmup = opts.get("warmup", W1_WARMUP_COMMANDS)
    if warmup:
        await co.fanout(warmup, rate, drain_s)
        await server_idle(pids.get("server"))
    out["fanout"] = await co.fanout(opts.get("commands", 100), rate, drain_s)
    if opts.get("capacity_rates"):
        steps = []
        best = 0.0
        for rate in opts["capacity_rates"]:
            count = max(5, int(rate * opts.get("capacity_step_s", 2.0)))
            step = await co.fanout(count, rate, drain_s=3.0)
            steps.append(step)
            ok = step["lost"] == 0 and step["p99_ms"] <= CAPACITY_P99_MS
            if not ok:
                break
            best = max(best, step["deliveries_per_s"] or 0.0)
        out["capacity"] = {"deliveries_per_s": best, "steps": steps}
    return out


async def w3(co: Coordinator, opts: dict[str, Any]) -> dict[str, Any]:
    seconds = opts.get("commands", 60) / opts.get("rate", 10.0) + 2
    await co.ask({"op": "chatter", "seconds": seconds + DRAIN_TIMEOUT_S})
    await asyncio.sleep(1.0)  # chatter at full rate before the teacher starts
    result = await co.fanout(opts.get("commands", 60), opts.get("rate", 10.0))
    await co.ask({"op": "chatter_stop"})
    got = await co.collect()
    result["chatter_frames_sent"] = got["chatter_sent"]
    result["event_acks"] = got["acks"]
    result["errors_to_headsets"] = got["errors"]
    return result


async def w4(co: Coordinator, opts: dict[str, Any], stalled_url: str) -> dict[str, Any]:
    """Trains on the same connections, some while an extra headset has stopped reading
    ("stalled") and as many without ("baseline"), in the order S B B S S B B S ... so that a
    drift over the run favours neither kind; the others' latencies are pooled per kind, so
    the comparison is thousands of deliveries against thousands in the same run. The last
    stalled headset stays until the server cuts it off (or `cutoff_wait_s` after the end)."""
    count, rate = opts.get("commands", 40), opts.get("rate", 20.0)
    pairs = max(1, opts.get("pairs", 3))
    baseline: list[float] = []
    stalled: list[float] = []
    lost = 0
    sock: socket.socket | None = None
    t_stall = 0.0
    server = co.pids().get("server")
    await co.fanout(max(5, count // 4), rate)  # warm-up, not counted: the first train after
    # connecting ran slower than any later one
    order = [k for i in range(pairs) for k in (("S", "B") if i % 2 == 0 else ("B", "S"))]
    if order[-1] == "B":
        order.reverse()  # end on a stalled train: its headset is the one whose cut-off is timed
    for kind in order:
        if kind == "S":
            sock, t_stall = await open_stalled(stalled_url)
            # Its admission (a database read, an attendance row) is not the stall's cost:
            # the first command after it waited behind that work, on the box and the peer.
            await server_idle(server)
            lost += (await co.fanout(count, rate))["lost"]
            stalled += co.latencies
        else:
            if sock is not None:
                sock.close()
                sock = None
                await server_idle(server)  # the server's bookkeeping of that disconnect
            lost += (await co.fanout(count, rate))["lost"]
            baseline += co.latencies
    assert sock is not None
    cut: float | None = None

    async def watch() -> None:
        nonlocal cut
        while cut is None:
            if released(sock, co.target.get("port")):
                cut = time.monotonic() - t_stall
                return
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watcher, opts.get("cutoff_wait_s", 5.0))
    watcher.cancel()
    sock.close()
    return {
        "pairs": pairs,
        "commands_per_train": count,
        "deliveries": len(stalled),
        "baseline_deliveries": len(baseline),
        "lost": lost,
        "p50_ms": round(pctl(stalled, 50), 2),
        "p99_ms": round(pctl(stalled, 99), 2),
        "baseline_p50_ms": round(pctl(baseline, 50), 2),
        "baseline_p99_ms": round(pctl(baseline, 99), 2),
        "stalled_cut_off_after_s": round(cut, 2) if cut is not None else None,
    }


async def w5(co: Coordinator, opts: dict[str, Any]) -> dict[str, Any]:
    await co.fanout(1, 1.0)  # the current state every headset must get back
    key = co.next_key
    parts = await co.ask({"op": "storm", "key": key})
    t_drop = min(p["t_drop"] for p in parts)
    done = [t - t_drop for p in parts for t in p["done"]]
    return {
        "headsets": co.n,
        "reconnected": sum(p["connected"] for p in parts),
        "failed": sum(p["failed"] for p in parts),
        "have_state": len(done),
        "all_have_state_s": round(max(done), 3) if len(done) == co.n else None,
        "p50_s": round(pctl(done, 50), 3),
        "max_s": round(max(done), 3) if done else None,
    }


async def w6(co: Coordinator, opts: dict[str, Any]) -> dict[str, Any]:
    jitter = bool(opts.get("proxy_port"))
    await co.ask(
        {
            "op": "sync",
            "samples": TIME_SAMPLES_JITTER if jitter else TIME_SAMPLES,
            "spacing_s": 0.1 if jitter else 0.03,  # 10/s: the box's sustained `time` rate
        }
    )
    await co.collect()
    devs: list[float] = []
    errs: list[float] = []
    late = 0
    trials = opts.get("trials", 5)
    for _ in range(trials):
        co.command("pause")
        await asyncio.sleep(0.4)
        co.command("play")
        await asyncio.sleep(opts.get("settle_s", 1.5))
        got = await co.collect()
        by_rev: dict[int, list[tuple[int, int, float, float]]] = {}
        for hs, rev, anchor, recv_wall, offset in got["starts"]:
            by_rev.setdefault(rev, []).append((hs, anchor, recv_wall, offset))
        if not by_rev:
            continue
        rows = by_rev[max(by_rev)]
        # A headset starts at the anchor (in its own clock estimate) or on arrival if late.
        starts = []
        for _hs, anchor, recv_wall, offset in rows:
            planned = anchor - offset
            if recv_wall > planned:
                late += 1
            starts.append(max(planned, recv_wall))
            errs.append(abs(max(planned, recv_wall) - anchor))
        mid = statistics.median(starts)
        devs.extend(abs(s - mid) for s in starts)
    return {
        "headsets": co.n,
        "trials": trials,
        "starts": len(devs),
        "skew_p50_ms": round(pctl(devs, 50), 2),
        "skew_p99_ms": round(pctl(devs, 99), 2),
        "skew_max_ms": round(max(devs), 2) if devs else None,
        "late_starts": late,
        "error_vs_anchor_p99_ms": round(pctl(errs, 99), 2),
    }


async def run_workload_async(
    target: dict[str, Any], workload: str, n: int, procs: int, opts: dict[str, Any]
) -> dict[str, Any]:
    urls = list(target["headset_urls"])
    if len(urls) < n + (1 if workload == "w4" else 0):
        raise ValueError(f"target has {len(urls)} headsets, {workload} needs {n}")
    if opts.get("proxy_port"):
        urls = [via_proxy(u, opts["proxy_port"]) for u in urls]
    co = Coordinator(target, n, procs)
    pids = co.pids()
    result: dict[str, Any] = {"target": target["name"], "workload": workload, "n": n}
    if "server" in pids:
        result["rss_before_mb"] = round(rss_mb(pids["server"]), 1)
    try:
        result["connect"] = await co.start(urls[:n])
        result["connect"]["idle_after_s"] = await server_idle(pids.get("server"))
        if workload == "w1":
            result.update(await w1(co, opts))
        elif workload == "w3":
            result.update(await w3(co, opts))
        elif workload == "w4":
            result.update(await w4(co, opts, urls[n]))
        elif workload == "w5":
            result.update(await w5(co, opts))
        elif workload == "w6":
            result.update(await w6(co, opts))
        else:
            raise ValueError(f"unknown workload {workload}")
    finally:
        await co.stop()
    result["procs"] = co.procs
    return result


def run_workload(
    target: dict[str, Any], workload: str, n: int, procs: int = 1, **opts: Any
) -> dict[str, Any]:
    """Run one workload against a running target; the caller's process is the coordinator."""
    with collector_paused():
        return asyncio.run(run_workload_async(target, workload, n, procs, opts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="JSON file describing the target")
    parser.add_argument("--workload", default="w1", choices=["w1", "w3", "w4", "w5", "w6"])
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--commands", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    with open(args.target) as f:
        target = json.load(f)
    result = run_workload(
        target, args.workload, args.n, args.procs, commands=args.commands, rate=args.rate
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
