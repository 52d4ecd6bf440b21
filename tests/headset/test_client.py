"""The reference headset client against the real box: synchronized start of 30 headsets,
through a delaying proxy, late join and reconnect."""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Callable

import aiohttp
import pytest

from tests.conftest import RunningBox
from tests.factories import Classroom, make_classroom
from tests.live.support import eventually
from vrlms_edge.headset.client import Applied, HeadsetClient, TeacherClient
from vrlms_edge.keys import CLOCK, DB, HUB
from vrlms_edge.live.clock import ServerClock


def skewed_clock(clock: ServerClock, offset_ms: float) -> Callable[[], float]:
    """A headset's local clock: the box's true time shifted by a secret offset."""
    return lambda: clock.now_ms_float() - offset_ms


class Fleet:
    def __init__(self, box: RunningBox, room: Classroom, ws_url: str | None = None) -> None:
        self.box = box
        self.room = room
        self.rng = random.Random(7)
        self.offsets: list[float] = []
        self.clients: list[HeadsetClient] = []
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.http = aiohttp.ClientSession()
        for hs in room.headsets:
            offset = self.rng.uniform(-3_600_000, 3_600_000)
            self.offsets.append(offset)
            self.clients.append(
                HeadsetClient(
                    box.url,
                    token=hs.token,
                    http=self.http,
                    local_ms=skewed_clock(box.app[CLOCK], offset),
                    rng=random.Random(hs.device.device_id),
                    ws_url=ws_url,
                )
            )

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(c.run(self.stop)) for c in self.clients]
        await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in self.clients)), timeout=20)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)
        await self.http.close()

    def started(self, rev: int) -> list[tuple[int, Applied]]:
        found = []
        for i, client in enumerate(self.clients):
            for applied in client.stats.applied:
                if applied.rev == rev and applied.started_local_ms is not None:
                    found.append((i, applied))
        return found

    def true_start_ms(self, i: int, applied: Applied) -> float:
        """When headset i really started, in the box's server time."""
        assert applied.started_local_ms is not None and applied.start_position_ms is not None
        # Its position at anchor time, mapped back: start instant minus position advanced.
        return applied.started_local_ms + self.offsets[i]


@pytest.fixture
async def room30(box: RunningBox) -> Classroom:
    return await make_classroom(box.app[DB], box.app[CLOCK], students=30)


async def play(box: RunningBox, room: Classroom) -> tuple[int, int]:
    async with TeacherClient(box.ws_url, room.teacher_token) as teacher:
        result = await teacher.command(room.session.id, "play")
    assert result.ok, result.error
    assert result.state is not None
    return result.state.rev, result.state.anchor_server_ms


async def test_thirty_headsets_start_together(box: RunningBox, room30: Classroom) -> None:
    fleet = Fleet(box, room30)
    try:
        await fleet.start()
        rev, anchor = await play(box, room30)
        await eventually(lambda: len(fleet.started(rev)) == 30, within_s=10)
        skews = [fleet.true_start_ms(i, a) - anchor for i, a in fleet.started(rev)]
        # Every headset acked that rev: the box's live picture says so.
        await eventually(
            lambda: all(
                e.applied_rev == rev for e in box.app[HUB]._rooms[room30.klass.id].roster.values()
            ),
            within_s=5,
        )
    finally:
        await fleet.close()
    p99 = sorted(abs(s) for s in skews)[int(0.99 * (len(skews) - 1))]
    print(f"start skew ms: median {statistics.median(skews):.2f} p99 {p99:.2f}")
    # Loopback: the lead (floor 250 ms) is far above delivery; a generous bound.
    assert p99 < 50
