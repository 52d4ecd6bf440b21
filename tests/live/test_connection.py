"""Per-connection send queues: a consumer that stops reading is cut off (4408) and never
delays the others; state coalesces newest-wins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RunningBox, start_box, stop_box
from tests.conftest import test_settings as box_settings
from tests.factories import Classroom, make_classroom
from tests.live.support import eventually, raw_websocket, receive_json
from vrlms_edge.domain.sessions import Attention, SessionState
from vrlms_edge.headset.client import TeacherClient
from vrlms_edge.keys import CLOCK, DB, HUB
from vrlms_edge.live.connection import MAX_PENDING_FRAMES, Connection

# A state this big (launch parameters of a rich lesson) fills socket buffers in a few revs.
BIG_LAUNCH = {"scene": "solar", "assets": "x" * 8000}


@pytest.fixture
async def slow_box(tmp_path: Path) -> AsyncIterator[RunningBox]:
    running = await start_box(box_settings(tmp_path / "data", ws_send_stall_s=0.5))
    try:
        yield running
    finally:
        await stop_box(running)


async def follow(ws: aiohttp.ClientWebSocketResponse, got: dict[int, float]) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            body = msg.json()
            if body["type"] == "state":
                got[body["rev"]] = time.monotonic()


async def test_slow_consumer_is_closed_and_others_get_every_state(slow_box: RunningBox) -> None:
    box = slow_box
    room: Classroom = await make_classroom(box.app[DB], box.app[CLOCK], 30, launch=BIG_LAUNCH)
    http = box.http
    slow_hs, fast_hs = room.headsets[0], room.headsets[1:]
    reader, writer = await raw_websocket(box.url, f"/websocket/?token={slow_hs.token}")
    fast = [await http.ws_connect(f"/websocket/?token={hs.token}") for hs in fast_hs]
    for ws in fast:
        assert (await receive_json(ws))["type"] == "welcome"
    got: list[dict[int, float]] = [{} for _ in fast]
    readers = [asyncio.create_task(follow(ws, g)) for ws, g in zip(fast, got, strict=True)]
    hub = box.app[HUB]
    sent_at: dict[int, float] = {}
    try:
        async with TeacherClient(box.ws_url, room.teacher_token, http=http) as teacher:
            result = await teacher.command(room.session.id, "play")
            assert result.ok and result.state is not None
            sent_at[result.state.rev] = time.monotonic()
            for n in range(40):
                result = await teacher.command(room.session.id, "seek", position_ms=1000 * n)
                assert result.ok and result.state is not None
                sent_at[result.state.rev] = time.monotonic()
            last = max(sent_at)
            await eventually(lambda: all(last in g for g in got), 5)
        # The slow headset was cut off, within the drain bound plus the watchdog period.
        await eventually(lambda: hub.closed_too_slow >= 1, 3)
        assert slow_hs.user.id not in {c.principal.user_id for c in hub.connections}
        # Every fast headset got every rev, promptly.
        delays = [g[rev] - sent_at[rev] for g in got for rev in sent_at]
        assert all(set(g) == set(sent_at) for g in got)
        assert max(delays) < 1.0, max(delays)
        # The slow socket ends (close frame after the data it held, then the box drops it).
        async with asyncio.timeout(10):
            while await reader.read(65536):
                pass
    finally:
        writer.close()
        for task in readers:
            task.cancel()
        for ws in fast:
            await ws.close()


async def test_state_coalesces_newest_wins_and_queue_is_bounded() -> None:
    class Idle:  # a writer that never runs: only the queue is under test
        pass

    conn = Connection.__new__(Connection)
    Connection.__init__(conn, Idle(), Idle(), Idle(), monotonic=time.monotonic)  # type: ignore[arg-type]
    conn.offer_state("s1", 1, "rev1")
    conn.offer_state("s1", 3, "rev3")
    conn.offer_state("s1", 2, "rev2")  # older than the pending one: ignored
    conn.offer_state("s2", 1, "other")
    assert list(conn._pending.values()) == ["rev3", "other"]
    for n in range(MAX_PENDING_FRAMES):
        conn.send(f"reply{n}")
    assert conn.pending == MAX_PENDING_FRAMES and conn.overflowed
    conn.offer_state("s1", 4, "rev4")  # coalescing still works when full
    assert conn._pending[("state", "s1")] == "rev4"
    conn.put_first("welcome")
    assert next(iter(conn._pending.values())) == "welcome"


async def test_states_written_directly_parse_at_every_frame_length(box: RunningBox) -> None:
    """Broadcast states bypass aiohttp's writer when the socket keeps up (wire_frame): a
    client must parse them whatever length field their size needs (7-bit, 16-bit, 64-bit),
    in order, interleaved with frames the writer task sends (the welcome)."""
    room: Classroom = await make_classroom(box.app[DB], box.app[CLOCK], 1)
    hub = box.app[HUB]
    hs = room.headsets[0]
    async with box.http.ws_connect(f"/websocket/?token={hs.token}") as ws:
        assert (await receive_json(ws))["type"] == "welcome"
        await eventually(lambda: any(c.principal.user_id == hs.user.id for c in hub.connections), 5)
        sizes = [0, 60, 125, 126, 5000, 65535, 65536, 200_000]
        for rev, size in enumerate(sizes, start=100):
            message = "m" * size
            state = SessionState(
                session_id=room.session.id,
                rev=rev,
                status="paused",
                lesson=None,
                anchor_server_ms=0,
                anchor_position_ms=rev,
                attention=Attention(on=True, message=message),
            )
            hub.publish(room.org.id, room.klass.id, state)
            got = await receive_json(ws)
            assert (got["rev"], got["attention"]["message"]) == (rev, message)
