"""Benchmark: durable interaction events per second with acknowledgements, and ack latency.

Starts the real `vrlms-edge serve` on 127.0.0.1 (a fresh data directory per run, SQLite at
synchronous NORMAL or FULL), seeds an org with N students, their headsets and a playing
session, then drives N simulated headsets from client worker processes:

- `ws`   : each headset holds a WebSocket and sends `event` frames at --rate per second (the
           box closes a connection above 100 frames/s, so this is an open-loop load below
           that), and records every `event_ack`; an event counts once its seq is acknowledged;
- `rest` : each headset uploads --batch events per POST /api/events/ in a closed loop (the
           offline-upload path; not rate-limited, so it shows what the writer can do).

In ws mode every headset connects first and sending starts --settle seconds after the last
one did (one start for all client processes). Every loop is bounded: --seconds of sending,
then at most DRAIN_S to collect the last acks. Reported: acknowledged (= durable) events per
second over the whole run, the latency from sending an event to receiving the ack that covers
it (p50/p99), and CPU over the run: the server's (its event-loop thread; its other threads:
the sqlite writer lane and aiosqlite's), server CPU per acknowledged event, and the clients'
(they share the machine's cores with the box: watch that column).

`--floor` drives a bare aiohttp WebSocket server instead (decode each frame as the box does,
ack each stream every 3 ms, no database, no auth): what one event per frame costs before any
of the box's own work. BENCH_PROFILE=file samples the server with py-spy (`--gil`, raw
folded stacks); BENCH_LOG_LEVEL=DEBUG with BENCH_SERVER_LOG=file logs every batch.

    .venv/bin/python bench/ingest.py                       # 30 and 300 headsets, NORMAL and FULL
    .venv/bin/python bench/ingest.py --headsets 300 --sync FULL --seconds 10 --mode ws
    .venv/bin/python bench/ingest.py --headsets 300 --sync NORMAL --floor
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp

from vrlms_edge.domain.tokens import issue_token
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    Class,
    Course,
    Device,
    DeviceStatus,
    Enrollment,
    Lesson,
    Module,
    Org,
    Role,
    Session,
    SessionLesson,
    SessionStatus,
    User,
    new_id,
)

try:
    from bench import wsclient
except ModuleNotFoundError:  # run as a script (bench/ingest.py): its own folder is on sys.path
    import wsclient  # type: ignore[no-redef,import-not-found]

# After the sending phase, acks of the last events still in flight are awaited this long.
DRAIN_S: Final = 10.0
# Every this many events, one is a `progress` event (it updates a Result row in the batch).
PROGRESS_EVERY: Final = 50
# ws: after every headset connected, the box gets this long before events start: its join
# bookkeeping (300 attendance rows through the ORM, behind the same write lock as the event
# batches) held the first batch back by up to 2.5 s, which is the connection storm's cost (W5).
SETTLE_S: Final = 3.0
# Client processes wait this long for each other's headsets to connect.
CONNECT_TIMEOUT_S: Final = 120.0
# Pacing tick of a WebSocket headset: events of one tick are sent together.
TICK_S: Final = 0.02


@dataclass
class Seeded:
    tokens: list[str]
    device_ids: list[str]
    lesson_id: str


async def seed(db: Database, headsets: int) -> Seeded:
    now = datetime.now(UTC)
    org = Org(id=new_id(), slug="bench", name="Bench")
    teacher = User(
        id=new_id(), org_id=org.id, role=Role.teacher, nickname="teacher", display_name="T"
    )
    course = Course(id=new_id(), org_id=org.id, title="Bench")
    module = Module(id=new_id(), org_id=org.id, course_id=course.id, title="Bench")
    lesson = Lesson(
        id=new_id(), org_id=org.id, module_id=module.id, title="L", apk_package="com.example"
    )
    klass = Class(id=new_id(), org_id=org.id, name="Bench", teacher_id=teacher.id)
    session = Session(
        id=new_id(),
        org_id=org.id,
        class_id=klass.id,
        status=SessionStatus.playing,
        lesson_id=lesson.id,
        rev=1,
        started_at=now - timedelta(minutes=1),
    )
    students = [
        User(id=new_id(), org_id=org.id, role=Role.student, nickname=f"s{i:03d}", display_name="S")
        for i in range(headsets)
    ]
    devices = [
        Device(
            id=new_id(),
            org_id=org.id,
            device_id=f"hs-{i:03d}",
            status=DeviceStatus.approved,
            bound_user_id=u.id,
        )
        for i, u in enumerate(students)
    ]
    async with db.write() as s:
        for batch in ([org], [teacher, course], [module, klass], [lesson, session]):
            s.add_all(batch)
            await s.flush()
        s.add(SessionLesson(org_id=org.id, session_id=session.id, lesson_id=lesson.id))
        s.add_all(students)
        await s.flush()
        s.add_all(devices)
        s.add_all(Enrollment(org_id=org.id, class_id=klass.id, user_id=u.id) for u in students)
    tokens = []
    for user, device in zip(students, devices, strict=True):
        token, _ = await issue_token(db, user, now=now, ttl_s=3600, device_pk=device.id)
        tokens.append(token)
    return Seeded(tokens=tokens, device_ids=[d.device_id for d in devices], lesson_id=lesson.id)


@dataclass
class Outcome:
    sent: int
    acked: int
    latencies: list[float]
    first_send: float
    last_ack: float
    cpu_s: float = 0.0  # the client process's CPU time (set on its first outcome)


LOOP_THREAD: Final = "loop"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name of a process (Linux /proc); the first
    thread is reported as LOOP_THREAD."""
    tick = os.sysconf("SC_CLK_TCK")
    spent: dict[str, float] = {}
    try:
        tasks = sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda p: int(p.name))
    except OSError:
        return spent
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = (
            LOOP_THREAD if task.name == str(pid) else stat[stat.index("(") + 1 : stat.rindex(")")]
        )
        fields = stat[stat.rindex(")") + 2 :].split()
        spent[name] = spent.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return spent


def _event_text(stream: str, seq: int, t_ms: int, lesson_id: str) -> str:
    if seq % PROGRESS_EVERY == 0:
        data = f'{{"progress":{min(1.0, seq / 100_000):.3f}}}'
        kind = "progress"
    else:
        data = f'{{"target":"obj-{seq % 11}","yaw":{seq % 360 - 180},"pitch":{seq % 60}}}'
        kind = "gaze"
    return (
        f'{{"type":"event","stream":"{stream}","seq":{seq},"kind":"{kind}",'
        f'"t_ms":{t_ms},"lesson_id":"{lesson_id}","data":{data}}}'
    )


class Start:
    """Every headset of every client process connects first; sending starts together, so the
    run measures ingest, not the connection storm (that is W5's)."""

    def __init__(self, expected: int, barrier: Any, settle_s: float) -> None:
        self.settle_s = settle_s
        self._left = expected
        self._barrier = barrier
        self._go = asyncio.Event()

    async def connected(self) -> None:
        self._left -= 1
        if self._left == 0:
            await asyncio.to_thread(self._barrier.wait, CONNECT_TIMEOUT_S)
            await asyncio.sleep(self.settle_s)
            self._go.set()
        await self._go.wait()


async def ws_headset(
    url: str,
    token: str,
    stream: str,
    lesson_id: str,
    args: Args,
    start: Start,
) -> Outcome:
    sent_at: list[float] = [0.0]
    latencies: list[float] = []
    acked = 0
    last_ack = 0.0
    welcomed = asyncio.get_running_loop().create_future()

    def on_text(data: bytes, now: float) -> None:
        nonlocal acked, last_ack
        if not welcomed.done():
            welcomed.set_result(None)
            return
        if b'"event_ack"' not in data:
            return
        seq = int(data.rsplit(b'"seq":', 1)[1].rstrip(b"}"))
        for n in range(acked + 1, seq + 1):
            latencies.append(now - sent_at[n])
        acked = max(acked, seq)
        last_ack = now

    ws_url = url.replace("http://", "ws://", 1)
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        ws = await wsclient.connect(f"{ws_url}/websocket/?token={token}", on_text)
        await asyncio.wait((welcomed, ws.closed), return_when=asyncio.FIRST_COMPLETED)
    await start.connected()
    first = time.monotonic()
    seq = 0
    per_tick = args.rate * TICK_S
    due = 0.0
    t_ms = int(time.time() * 1000)
    while time.monotonic() - first < args.seconds and ws.open:
        due += per_tick
        while seq < int(due):
            seq += 1
            sent_at.append(time.monotonic())
            ws.send_text(_event_text(stream, seq, t_ms, lesson_id))
        t_ms += int(TICK_S * 1000)
        await asyncio.sleep(max(0.0, first + (due / args.rate) - time.monotonic()))
    deadline = time.monotonic() + DRAIN_S
    while acked < seq and time.monotonic() < deadline and ws.open:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if ws.closed.done():
        print(f"{stream}: closed {ws.closed.result()} after {seq} sent, {acked} acked", flush=True)
    ws.close()
    return Outcome(sent=seq, acked=acked, latencies=latencies, first_send=first, last_ack=last_ack)


async def rest_headset(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    device_id: str,
    stream: str,
    lesson_id: str,
    args: Args,
) -> Outcome:
    latencies: list[float] = []
    acked = 0
    last_ack = 0.0
    seq = 0
    first = time.monotonic()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    t_ms = int(time.time() * 1000)
    while time.monotonic() - first < args.seconds:
        events = ",".join(
            _event_text(stream, seq + i + 1, t_ms, lesson_id).replace('"type":"event",', "")
            for i in range(args.batch)
        )
        body = f'{{"device_id":"{device_id}","stream":"{stream}","events":[{events}]}}'
        started = time.monotonic()
        async with http.post(f"{url}/api/events/", data=body, headers=headers) as resp:
            answer = await resp.json()
        now = time.monotonic()
        if resp.status != 200:
            raise RuntimeError(f"upload refused: {resp.status} {answer}")
        seq += args.batch
        new = answer["acked"][stream] - acked
        latencies.extend([now - started] * new)
        acked = answer["acked"][stream]
        last_ack = now
    return Outcome(sent=seq, acked=acked, latencies=latencies, first_send=first, last_ack=last_ack)


async def _worker(
    url: str, jobs: list[tuple[str, str, str]], lesson_id: str, args: Args, barrier: Any
) -> list[Outcome]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        if args.mode == "ws":
            start = Start(len(jobs), barrier, args.settle)
            runs = [ws_headset(url, tok, stream, lesson_id, args, start) for tok, _, stream in jobs]
        else:
            runs = [
                rest_headset(http, url, tok, dev, stream, lesson_id, args)
                for tok, dev, stream in jobs
            ]
        return list(await asyncio.gather(*runs))


def worker(
    url: str, jobs: list[tuple[str, str, str]], lesson_id: str, args: Args, barrier: Any
) -> list[Outcome]:
    started = time.process_time()
    outcomes = asyncio.run(_worker(url, jobs, lesson_id, args, barrier))
    if outcomes:
        outcomes[0].cpu_s = time.process_time() - started
    return outcomes


# --- the floor: a bare aiohttp WebSocket server (no database, no auth) ------------------------

# The floor server acknowledges what it decoded this often (the box's writer lingers 3 ms).
FLOOR_ACK_S: Final = 0.003


def serve_floor() -> None:
    """Accept /websocket/, decode every frame as the box does (msgspec, `ClientMessage`) and
    send one `event_ack` per stream every FLOOR_ACK_S: what aiohttp and the decoding cost
    alone, driven by the same clients as the box."""
    from aiohttp import web

    from vrlms_edge.live import protocol

    dirty: dict[web.WebSocketResponse, dict[str, int]] = {}

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"welcome"}')
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            message = protocol.decode_client(msg.data)
            if isinstance(message, protocol.Event):
                dirty.setdefault(ws, {})[message.stream] = message.seq
        dirty.pop(ws, None)
        return ws

    async def acks(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(FLOOR_ACK_S)
                pending = list(dirty.items())
                dirty.clear()
                for ws, heads in pending:
                    for stream, seq in heads.items():
                        if not ws.closed:
                            await ws.send_str(protocol.event_ack(stream, seq))

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/websocket/", websocket)
        app.cleanup_ctx.append(acks)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class Args:
    mode: str
    seconds: float
    rate: float
    batch: int
    settle: float = 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_one(
    headsets: int, sync: str, args: Args, workers: int, floor: bool = False
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="vrlms-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VRLMS_")}
        env.update(
            VRLMS_MDNS="off",
            VRLMS_MDNS_INTERFACES="127.0.0.1",
            VRLMS_SQLITE_SYNCHRONOUS=sync,
            VRLMS_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        )
        cmd = [sys.executable, "-m", "vrlms_edge", "--data-dir", str(data_dir), "serve"]
        if floor:
            cmd = [sys.executable, __file__, "--serve-floor"]
        # BENCH_SERVER_LOG=file (with BENCH_LOG_LEVEL=DEBUG: one line per batch) for diagnosis.
        log_path = os.environ.get("BENCH_SERVER_LOG")
        server_log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            cmd if floor else [*cmd, "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=server_log,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("listening on "):
                raise RuntimeError(f"serve did not start: {line!r}")
            url = line.split()[-1]
            db = Database(f"sqlite+aiosqlite:///{(data_dir / 'vrlms.sqlite3').resolve()}")

            async def seeding() -> Seeded:
                try:
                    return await seed(db, headsets)
                finally:
                    await db.dispose()

            if floor:
                seeded = Seeded(
                    tokens=["floor"] * headsets,
                    device_ids=[f"hs-{i:03d}" for i in range(headsets)],
                    lesson_id="floor",
                )
            else:
                seeded = asyncio.run(seeding())
            # BENCH_PROFILE=file: py-spy samples the server (raw folded stacks) during the run.
            profile = os.environ.get("BENCH_PROFILE")
            spy = (
                subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "-p",
                        str(proc.pid),
                        "-f",
                        "raw",
                        "-o",
                        profile,
                        "--nonblocking",
                        # Only the thread holding the GIL: what the process spends it on.
                        "--gil",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                if profile
                else None
            )
            jobs = [
                (tok, dev, f"bench-{i}")
                for i, (tok, dev) in enumerate(zip(seeded.tokens, seeded.device_ids, strict=True))
            ]
            shares = [share for share in (jobs[i::workers] for i in range(workers)) if share]
            ctx = multiprocessing.get_context("spawn")
            cpu_before = thread_cpu(proc.pid)
            with ctx.Manager() as manager, ctx.Pool(len(shares)) as pool:
                ws = args.mode == "ws"
                # In ws mode this process waits at the barrier too: the server's CPU is counted
                # from the moment every headset is connected.
                barrier = manager.Barrier(len(shares) + (1 if ws else 0))
                jobs_done = pool.starmap_async(
                    worker, [(url, share, seeded.lesson_id, args, barrier) for share in shares]
                )
                if ws:
                    barrier.wait(CONNECT_TIMEOUT_S)
                    time.sleep(args.settle)
                    cpu_before = thread_cpu(proc.pid)
                parts = jobs_done.get()
            cpu = {
                name: spent - cpu_before.get(name, 0.0)
                for name, spent in thread_cpu(proc.pid).items()
            }
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
                spy.wait(timeout=60)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    outcomes = [o for part in parts for o in part]
    acked = sum(o.acked for o in outcomes)
    sent = sum(o.sent for o in outcomes)
    start = min(o.first_send for o in outcomes)
    end = max(o.last_ack for o in outcomes)
    latencies = [x for o in outcomes for x in o.latencies]
    return {
        "sent": sent,
        "acked": acked,
        "events_per_s": acked / (end - start) if end > start else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
        "wall_s": end - start,
        "server_cpu_s": sum(cpu.values()),
        # The event loop runs on the process's first thread.
        "loop_cpu_s": cpu.get(LOOP_THREAD, 0.0),
        # Every other thread: the sqlite writer lane, aiosqlite's threads (OS threads are not
        # named after Python threads, so they cannot be told apart here).
        "threads_cpu_s": sum(v for k, v in cpu.items() if k != LOOP_THREAD),
        "client_cpu_s": sum(o.cpu_s for part in parts for o in part[:1]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--headsets", default="30,300", help="comma list (default 30,300)")
    parser.add_argument("--sync", default="NORMAL,FULL", help="comma list of NORMAL/FULL")
    parser.add_argument("--mode", choices=("ws", "rest"), default="ws")
    parser.add_argument("--seconds", type=float, default=8.0, help="sending time per run")
    parser.add_argument(
        "--rate", type=float, default=90.0, help="ws: events/s per headset (box limit: 100)"
    )
    parser.add_argument("--batch", type=int, default=500, help="rest: events per upload")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE_S,
        help="ws: seconds between the last connection and the first event",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="ws: drive a bare aiohttp server (decode + ack, no database) instead of the box",
    )
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve_floor:
        serve_floor()
        return 0
    args = Args(
        mode=opts.mode, seconds=opts.seconds, rate=opts.rate, batch=opts.batch, settle=opts.settle
    )
    print(
        ("FLOOR (bare aiohttp, no database) " if opts.floor else "")
        + f"mode={args.mode} seconds={args.seconds:g} workers={opts.workers} "
        + (f"settle={args.settle:g}s " if args.mode == "ws" else "")
        + (f"rate={args.rate:g}/s per headset" if args.mode == "ws" else f"batch={args.batch}")
    )
    print(
        f"{'headsets':>8} {'sync':>6} {'sent':>9} {'acked':>9} {'events/s':>10}"
        f" {'p50 ms':>8} {'p99 ms':>8} {'srv cpu%':>8} {'loop%':>6} {'threads%':>8}"
        f" {'us/event':>8} {'client cpu%':>11}"
    )
    for sync in opts.sync.split(","):
        for headsets in (int(h) for h in opts.headsets.split(",")):
            r = run_one(headsets, sync.strip().upper(), args, max(1, opts.workers), opts.floor)
            print(
                f"{headsets:>8} {sync:>6} {int(r['sent']):>9} {int(r['acked']):>9}"
                f" {r['events_per_s']:>10.0f}"
                f" {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}"
                f" {100 * r['server_cpu_s'] / r['wall_s']:>8.0f}"
                f" {100 * r['loop_cpu_s'] / r['wall_s']:>6.0f}"
                f" {100 * r['threads_cpu_s'] / r['wall_s']:>8.0f}"
                f" {1e6 * r['server_cpu_s'] / max(1, r['acked']):>8.1f}"
                f" {100 * r['client_cpu_s'] / r['wall_s']:>11.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
