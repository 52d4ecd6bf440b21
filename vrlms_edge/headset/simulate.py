"""The class simulator: N reference headsets (demo students and their headsets) follow a
lesson on a box while a simulated teacher plays and pauses; it reports start skew, state
delivery, round trips and reconnects. `vrlms-edge simulate` is its command line.

Every headset logs in as studentNN / PIN 1000+NN on DEMO-HS-NN (the demo school), syncs its
clock, follows states, acks them, sends status every `status_every_s`, gaze/click events at
`event_rate` per second (resent until acknowledged) and, optionally, a JPEG view. With a
teacher login it also drives the lesson: play, then pause/play every `cycle_s`.

Measures (all on this machine's monotonic clock, so the figures need no clock sync):
- start skew: when each headset began playing, in server time by its own clock estimate,
  minus anchor_server_ms (the box shows teachers the same from the acks);
- state delivery: from the teacher's `command` leaving to each headset holding the new state;
- RTT: the minimum of each headset's clock samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TextIO

import aiohttp

from vrlms_edge.headset.client import (
    PLACEHOLDER_VIEW,
    Applied,
    Credentials,
    HeadsetClient,
    LoginFailed,
    TeacherClient,
    login,
    websocket_url,
)

# Logins at once: PINs are checked with scrypt; more in parallel only queue on the box's CPU.
LOGIN_CONCURRENCY: Final = 8
# Before driving, wait this long at most for every headset's first clock estimate.
SETTLE_TIMEOUT_S: Final = 60.0
PROGRESS_EVERY_S: Final = 1.0
# After a command, wait at most this long for every headset to have applied it.
APPLY_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class SimulationConfig:
    url: str
    students: int = 30
    duration_s: float = 30.0
    first: int = 1
    event_rate: float = 2.0  # gaze/click events per headset per second
    status_every_s: float = 1.0
    view_every_s: float = 0.0  # 0: no JPEG views
    teacher: str | None = "teacher"
    teacher_pin: str = "1234"
    cycle_s: float = 5.0
    org: str | None = None
    seed: int = 1


def student(n: int) -> Credentials:
    """Demo student n: nickname, PIN and headset (see domain/demo.py)."""
    return Credentials(nickname=f"student{n:02d}", pin=f"{1000 + n}", device_id=f"DEMO-HS-{n:02d}")


def roster_rows(first: int, last: int, class_name: str = "Demo Class") -> str:
    """CSV for `vrlms-edge import-roster`: more demo students, for runs beyond the demo's 30."""
    lines = ["class,nickname,display_name,role,pin,device_id"]
    for n in range(first, last + 1):
        c = student(n)
        lines.append(f"{class_name},{c.nickname},Student {n:02d},student,{c.pin},{c.device_id}")
    return "\n".join(lines) + "\n"


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass
class SimulationReport:
    headsets: list[HeadsetClient]
    nicknames: list[str]
    skews_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    command_ms: list[float] = field(default_factory=list)  # teacher: command -> result
    starts: int = 0
    login_failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        rtts = [h.clock.min_rtt_ms for h in self.headsets if h.clock.min_rtt_ms is not None]
        abs_skews = [abs(s) for s in self.skews_ms]
        return {
            "headsets": len(self.headsets),
            "starts": self.starts,
            "skew_p50_ms": quantile(abs_skews, 0.5),
            "skew_p99_ms": quantile(abs_skews, 0.99),
            "skew_max_ms": max(abs_skews, default=math.nan),
            "delivery_p50_ms": quantile(self.delivery_ms, 0.5),
            "delivery_p99_ms": quantile(self.delivery_ms, 0.99),
            "command_p50_ms": quantile(self.command_ms, 0.5),
            "rtt_p50_ms": quantile(rtts, 0.5),
            "rtt_p99_ms": quantile(rtts, 0.99),
            "reconnects": sum(h.stats.reconnects for h in self.headsets),
            "events_sent": sum(h.stats.events_sent for h in self.headsets),
            "events_unacked": sum(len(h.events.unacked) for h in self.headsets),
        }

    def table(self) -> str:
        rows = [
            f"{'headset':<12} {'conn':>4} {'reco':>4} {'starts':>6} {'skew p50':>9} "
            f"{'skew max':>9} {'rtt min':>8} {'events':>7} {'unacked':>7} errors"
        ]
        for nick, h in zip(self.nicknames, self.headsets, strict=True):
            skews = [abs(start_skew(a)) for a in _starts(h)]
            rtt = h.clock.min_rtt_ms
            rows.append(
                f"{nick:<12} {h.stats.connects:>4} {h.stats.reconnects:>4} {len(skews):>6} "
                f"{quantile(skews, 0.5):>9.1f} {max(skews, default=math.nan):>9.1f} "
                f"{rtt if rtt is not None else math.nan:>8.2f} {h.stats.events_sent:>7} "
                f"{len(h.events.unacked):>7} "
                + (",".join(f"{k}:{v}" for k, v in sorted(h.stats.errors.items())) or "-")
            )
        return "\n".join(rows)


def start_skew(a: Applied) -> float:
    """How late (ms, + late) the headset began playing after the anchor, by its own clock
    estimate (sub-millisecond: the acked applied_ms is rounded)."""
    assert a.started_local_ms is not None
    return a.started_local_ms + a.offset_ms - a.anchor_server_ms


def _starts(h: HeadsetClient) -> list[Applied]:
    return [
        a
        for a in h.stats.applied
        if a.status == "playing" and a.applied_ms is not None and a.started_local_ms is not None
    ]


class Simulation:
    def __init__(self, config: SimulationConfig, progress: TextIO = sys.stderr) -> None:
        self.config = config
        self.progress = progress
        self.rng = random.Random(config.seed)
        self.stop = asyncio.Event()
        self.sent_ms: dict[int, float] = {}  # rev -> when the teacher's command left
        self.rev = 0

    async def run(self) -> SimulationReport:
        cfg = self.config
        base = cfg.url.rstrip("/")
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            numbers = range(cfg.first, cfg.first + cfg.students)
            creds = [
                Credentials(c.nickname, c.pin, c.device_id, cfg.org) for c in map(student, numbers)
            ]
            tokens = await self._login_all(http, base, creds)
            report = SimulationReport(headsets=[], nicknames=[])
            for cred, token in zip(creds, tokens, strict=True):
                if isinstance(token, str):
                    report.headsets.append(
                        HeadsetClient(
                            base,
                            credentials=cred,
                            token=token,
                            http=http,
                            rng=random.Random(cred.device_id),
                        )
                    )
                    report.nicknames.append(cred.nickname)
                else:
                    report.login_failures.append(f"{cred.nickname}: {token}")
            tasks = [asyncio.create_task(h.run(self.stop)) for h in report.headsets]
            tasks += [asyncio.create_task(self._behave(h)) for h in report.headsets]
            progress = asyncio.create_task(self._progress(report))
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.gather(*(h.synced.wait() for h in report.headsets)),
                        SETTLE_TIMEOUT_S,
                    )
                if cfg.teacher is not None:
                    await self._drive(http, base, report)
                else:
                    await asyncio.sleep(cfg.duration_s)
            finally:
                self.stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
                self.progress.write("\n")
        self._measure(report)
        return report

    async def _login_all(
        self, http: aiohttp.ClientSession, base: str, creds: list[Credentials]
    ) -> list[str | Exception]:
        gate = asyncio.Semaphore(LOGIN_CONCURRENCY)

        async def one(c: Credentials) -> str | Exception:
            async with gate:
                try:
                    return await login(http, base, c)
                except (LoginFailed, aiohttp.ClientError) as exc:
                    return exc

        return list(await asyncio.gather(*(one(c) for c in creds)))

    async def _behave(self, h: HeadsetClient) -> None:
        """Status, gaze/click events and views at the configured rates."""
        cfg = self.config
        rng = random.Random(self.rng.random())
        await h.connected.wait()
        next_status = next_view = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_status:
                await h.send_status(battery=round(rng.uniform(0.2, 1.0), 2), app="sim")
                next_status = now + cfg.status_every_s
            if cfg.view_every_s > 0 and now >= next_view:
                await h.send_view(PLACEHOLDER_VIEW)
                next_view = now + cfg.view_every_s
            if cfg.event_rate > 0:
                kind = "gaze" if rng.random() < 0.8 else "click"
                h.record(kind, {"target": f"object{rng.randrange(20)}"})
                delay = rng.expovariate(cfg.event_rate)
            else:
                delay = cfg.status_every_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), min(delay, 1.0))

    async def _drive(
        self, http: aiohttp.ClientSession, base: str, report: SimulationReport
    ) -> None:
        cfg = self.config
        assert cfg.teacher is not None
        token = await login(http, base, Credentials(cfg.teacher, cfg.teacher_pin, org=cfg.org))
        ws_url = websocket_url(base, token).split("?", 1)[0]
        async with TeacherClient(ws_url, token, http=http) as teacher:
            await asyncio.sleep(0.5)  # the teacher's states of every session arrive first
            live = [s for s in teacher.states.values() if s.status != "stopped"]
            pool = live or list(teacher.states.values())
            if not pool:
                raise RuntimeError("the teacher has no session to drive")
            session = max(pool, key=lambda s: (s.status == "playing", s.rev))
            deadline = time.monotonic() + cfg.duration_s
            playing = session.status == "playing"
            if playing:
                await self._command(teacher, session.session_id, "pause", report)
                playing = False
            while time.monotonic() < deadline:
                action = "pause" if playing else "play"
                began = time.monotonic()
                await self._command(teacher, session.session_id, action, report)
                playing = not playing
                # A start is measured when every headset began: never pause before that.
                await self._all_applied(report, APPLY_TIMEOUT_S)
                rest = min(cfg.cycle_s - (time.monotonic() - began), deadline - time.monotonic())
                await asyncio.sleep(max(0.0, rest))
            if playing:
                await self._command(teacher, session.session_id, "pause", report)
            await asyncio.sleep(1.0)  # the last acks

    async def _all_applied(self, report: SimulationReport, within_s: float) -> None:
        def done() -> bool:
            return all(
                h.stats.applied
                and h.stats.applied[-1].rev >= self.rev
                and (h.stats.applied[-1].status != "playing" or h.playback.playing)
                for h in report.headsets
                if h.connected.is_set()
            )

        end = time.monotonic() + within_s
        while not done() and time.monotonic() < end:  # noqa: ASYNC110 - polling headsets
            await asyncio.sleep(0.02)

    async def _command(
        self, teacher: TeacherClient, session_id: str, action: str, report: SimulationReport
    ) -> None:
        sent = time.monotonic() * 1000.0
        result = await teacher.command(session_id, action)
        if not result.ok or result.state is None:
            self.progress.write(f"\ncommand {action} refused: {result.error}\n")
            return
        self.sent_ms[result.state.rev] = sent
        report.command_ms.append(time.monotonic() * 1000.0 - sent)
        self.rev = result.state.rev
        if action == "play":
            report.starts += 1

    def _measure(self, report: SimulationReport) -> None:
        for h in report.headsets:
            for applied in h.stats.applied:
                sent = self.sent_ms.get(applied.rev)
                if sent is not None:
                    report.delivery_ms.append(applied.received_local_ms - sent)
            for applied in _starts(h):
                if applied.rev in self.sent_ms:
                    report.skews_ms.append(start_skew(applied))

    async def _progress(self, report: SimulationReport) -> None:
        started = time.monotonic()
        while True:
            hs = report.headsets
            connected = sum(h.connected.is_set() for h in hs)
            synced = sum(h.synced.is_set() for h in hs)
            acked = sum(1 for h in hs if h.stats.applied and h.stats.applied[-1].rev == self.rev)
            self.progress.write(
                f"\r[{time.monotonic() - started:5.1f}s] connected {connected}/{len(hs)}"
                f" synced {synced} rev {self.rev} applied {acked}/{len(hs)}"
                f" events {sum(h.stats.events_sent for h in hs)}"
                f" reconnects {sum(h.stats.reconnects for h in hs)}   "
            )
            self.progress.flush()
            await asyncio.sleep(PROGRESS_EVERY_S)


async def simulate(config: SimulationConfig, progress: TextIO = sys.stderr) -> SimulationReport:
    return await Simulation(config, progress).run()
