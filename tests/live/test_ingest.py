"""Event ingest: exactly-once storage, contiguous acks, back-pressure, bad input, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from tests.conftest import RunningBox, spawn_serve
from tests.factories import TrackingRoom, auth, classroom
from tests.live.support import receive_json, receive_type
from vrlms_edge.domain.events import NewEvent, Stored
from vrlms_edge.keys import DB, INGEST
from vrlms_edge.live.ingest import MAX_EVENT_DATA_BYTES, EventIngest
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import EventStream, InteractionEvent

# Headset times near now, so events fall into the playing session.
T0 = int(time.time() * 1000)


def ev(seq: int, kind: str = "gaze", **data: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "t_ms": T0 + seq, "data": data or {"target": "t"}}


async def upload(
    box: RunningBox, room: TrackingRoom, stream: str, events: list[dict[str, Any]], student: int = 0
) -> tuple[int, Any]:
    who = room.students[student]
    body = {"device_id": who.device.device_id, "stream": stream, "events": events}
    async with box.http.post("/api/events/", json=body, headers=auth(who.token)) as resp:
        return resp.status, await resp.json()


async def stored_seqs(db: Database, stream: str) -> list[int]:
    async with db.read() as s:
        rows = await s.execute(
            select(InteractionEvent.seq)
            .where(InteractionEvent.stream == stream)
            .order_by(InteractionEvent.seq)
        )
        return list(rows.scalars())


async def test_rest_batch_is_stored_and_acknowledged(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    status, body = await upload(box, room, "s1", [ev(i) for i in range(1, 51)])
    assert status == 200, body
    assert body == {"acked": {"s1": 50}}
    assert await stored_seqs(box.app[DB], "s1") == list(range(1, 51))
    async with box.app[DB].read() as s:
        head = await s.get(EventStream, (room.students[0].device.id, "s1"))
        assert head is not None and head.acked_seq == 50
        event = (await s.execute(select(InteractionEvent).limit(1))).scalar_one()
    assert event.user_id == room.students[0].user.id
    assert event.session_id == room.session.id  # attributed to the playing session
    assert event.data == {"target": "t"}


async def test_batch_rows_get_distinct_time_ordered_ids(box: RunningBox) -> None:
    """One upload spanning several statement shapes (1024 + 256 + 64 + 16 + 4 + 1 rows): every
    row has its own UUIDv7-shaped id, rising with the seq, and its own `data` text."""
    room = await classroom(box.app[DB])
    events = [ev(i, n=i) for i in range(1, 1366)]
    status, body = await upload(box, room, "ids", events)
    assert status == 200 and body == {"acked": {"ids": 1365}}, body
    async with box.app[DB].read() as s:
        rows = (
            await s.execute(
                select(InteractionEvent.seq, InteractionEvent.id, InteractionEvent.data)
                .where(InteractionEvent.stream == "ids")
                .order_by(InteractionEvent.seq)
            )
        ).all()
    assert [seq for seq, _, _ in rows] == list(range(1, 1366))
    ids = [row_id for _, row_id, _ in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(row_id).version == 7 and len(row_id) == 36 for row_id in ids)
    assert [data for _, _, data in rows] == [{"n": i} for i in range(1, 1366)]


async def test_duplicates_and_out_of_order_are_stored_once(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    status, body = await upload(box, room, "s2", [ev(1), ev(2), ev(4), ev(5), ev(2)])
    assert status == 200
    assert body == {"acked": {"s2": 2}}  # 3 is missing: 4 and 5 stored, not acknowledged
    assert await stored_seqs(box.app[DB], "s2") == [1, 2, 4, 5]
    status, body = await upload(box, room, "s2", [ev(3)])
    assert body == {"acked": {"s2": 5}}
    status, body = await upload(box, room, "s2", [ev(i) for i in range(5, 0, -1)])
    assert body == {"acked": {"s2": 5}}
    assert await stored_seqs(box.app[DB], "s2") == [1, 2, 3, 4, 5]


async def test_same_stream_name_on_two_devices_is_two_streams(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    assert (await upload(box, room, "app", [ev(1), ev(2)], student=0))[1] == {"acked": {"app": 2}}
    assert (await upload(box, room, "app", [ev(1)], student=1))[1] == {"acked": {"app": 1}}
    assert len(await stored_seqs(box.app[DB], "app")) == 3


@pytest.mark.parametrize(
    ("bad", "status", "code"),
    [
        ({"seq": 0, "kind": "gaze", "t_ms": 1}, 422, "validation_error"),
        ({"seq": 3, "kind": "gaze"}, 422, "validation_error"),
        ({"seq": 3, "kind": "", "t_ms": 1}, 422, "validation_error"),
        ({"seq": 3, "kind": "gaze", "t_ms": 1, "data": [1, 2]}, 422, "validation_error"),
        ({"seq": 3, "kind": "gaze", "t_ms": 1, "data": "x"}, 422, "validation_error"),
        (
            {"seq": 3, "kind": "gaze", "t_ms": 1, "data": {"x": "y" * MAX_EVENT_DATA_BYTES}},
            413,
            "event_too_large",
        ),
    ],
)
async def test_malformed_or_oversized_event_stores_nothing(
    box: RunningBox, bad: dict[str, Any], status: int, code: str
) -> None:
    room = await classroom(box.app[DB])
    got, body = await upload(box, room, "bad", [ev(1), ev(2), bad, ev(4)])
    assert got == status, body
    assert body["error"]["code"] == code
    assert body["error"]["detail"]["path"].startswith("$.events[2]")
    assert await stored_seqs(box.app[DB], "bad") == []


async def test_bad_bodies_and_strangers(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    other = await classroom(box.app[DB], slug="other")
    who = room.students[0]
    async with box.http.post("/api/events/", data=b"{nope", headers=auth(who.token)) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_json"
    body = {"device_id": who.device.device_id, "stream": "x", "events": [ev(1)]}
    async with box.http.post("/api/events/", json=body) as resp:
        assert resp.status == 401
    # Another org's device is unknown here; a classmate's headset is not yours.
    body["device_id"] = other.students[0].device.device_id
    async with box.http.post("/api/events/", json=body, headers=auth(who.token)) as resp:
        assert resp.status == 404
    body["device_id"] = room.students[1].device.id
    async with box.http.post("/api/events/", json=body, headers=auth(who.token)) as resp:
        assert resp.status == 403
    body["events"] = []
    async with box.http.post("/api/events/", json=body, headers=auth(who.token)) as resp:
        assert resp.status == 422


async def test_seq_far_ahead_is_refused_not_acknowledged(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    status, body = await upload(box, room, "far", [ev(1), ev(10**9)])
    assert status == 200
    assert body == {"acked": {"far": 1}}
    assert await stored_seqs(box.app[DB], "far") == [1]


class Counting:
    def __init__(self) -> None:
        self.acks: dict[str, int] = {}

    def settled(self, acks: dict[str, int], count: int, refused: list[tuple[str, int]]) -> None:
        self.acks.update(acks)

    def failed(self, count: int) -> None:
        raise AssertionError("batch failed")


async def test_full_queue_makes_submitters_wait_then_busy(box: RunningBox) -> None:
    """Back-pressure: with the writer held, a full queue admits nothing more (no growth);
    a waiting submitter proceeds as soon as the writer frees space."""
    room = await classroom(box.app[DB])
    who = room.students[0]
    ingest = EventIngest(box.app[DB], box.app[INGEST]._clock, capacity=3, admit_timeout_s=0.2)
    origin_events = [
        NewEvent(
            org_id=room.org.id,
            device_pk=who.device.id,
            user_id=who.user.id,
            stream="bp",
            seq=i,
            kind="gaze",
            t_ms=i,
            lesson_id=None,
            data="{}",
            received_ms=i,
        )
        for i in range(1, 6)
    ]
    sink = Counting()
    for e in origin_events[:3]:
        await ingest.submit([e], sink)
    assert ingest.backlog == 3
    with pytest.raises(Exception) as refused:
        await ingest.submit([origin_events[3]], sink)
    assert getattr(refused.value, "code", None) == "busy"
    assert ingest.backlog == 3
    waiting = asyncio.create_task(ingest.submit([origin_events[3]], sink))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    writer = asyncio.create_task(ingest.run())
    await asyncio.wait_for(waiting, 2)
    await ingest.submit([origin_events[4]], sink)
    await ingest.close()
    await asyncio.wait_for(writer, 5)
    assert sink.acks == {"bp": 5}
    assert await stored_seqs(box.app[DB], "bp") == [1, 2, 3, 4, 5]


async def test_observer_sees_committed_batches(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    seen: list[Stored] = []
    box.app[INGEST].observers.append(seen.append)
    await upload(box, room, "obs", [ev(1), ev(2)])
    await upload(box, room, "obs", [ev(2)])
    assert sum(len(s.fresh) for s in seen) == 2


CLIENTS = 10


# --- over the WebSocket ----------------------------------------------------------------------


async def acked_until(ws: aiohttp.ClientWebSocketResponse, stream: str, seq: int) -> list[Any]:
    """Messages received until the stream's ack reaches seq (acks only grow)."""
    seen = []
    async with asyncio.timeout(10):
        while True:
            body = await receive_json(ws)
            seen.append(body)
            if body.get("type") == "event_ack" and body["stream"] == stream and body["seq"] >= seq:
                assert body["seq"] == seq
                return seen


async def test_websocket_events_are_acknowledged_after_commit(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    who = room.students[0]
    async with box.http.ws_connect(f"/websocket/?token={who.token}") as ws:
        assert (await receive_json(ws))["type"] == "welcome"
        for seq in range(1, 21):
            await ws.send_json({"type": "event", "stream": "w", **ev(seq)})
        await acked_until(ws, "w", 20)
        assert await stored_seqs(box.app[DB], "w") == list(range(1, 21))
        # Out of order and duplicated: 22 and 23 wait for 21; 5 and 23 again are stored once.
        for seq in (22, 23, 5, 23):
            await ws.send_json({"type": "event", "stream": "w", **ev(seq)})
        await ws.send_json({"type": "event", "stream": "w", **ev(21)})
        seen = await acked_until(ws, "w", 23)
        assert all(m["seq"] in (20, 23) for m in seen if m.get("type") == "event_ack")
        assert await stored_seqs(box.app[DB], "w") == list(range(1, 24))
        # Oversized data: refused with an error, nothing stored, the connection stays.
        big = ev(24, blob="x" * MAX_EVENT_DATA_BYTES)
        await ws.send_json({"type": "event", "stream": "w", **big})
        assert (await receive_type(ws, "error"))["error"]["code"] == "event_too_large"
        # `data` that is not an object: a malformed message, refused, the connection stays.
        for data in ([1, 2], "x", None):
            await ws.send_json({"type": "event", "stream": "w", **ev(24), "data": data})
            assert (await receive_type(ws, "error"))["error"]["code"] == "invalid_message"
        await ws.send_json({"type": "event", "stream": "w", **ev(24)})
        await acked_until(ws, "w", 24)
    assert await stored_seqs(box.app[DB], "w") == list(range(1, 25))
    async with box.app[DB].read() as s:
        event = (
            await s.execute(select(InteractionEvent).where(InteractionEvent.seq == 24))
        ).scalar_one()
    assert event.data == {"target": "t"} and event.session_id == room.session.id


async def test_teacher_connection_cannot_send_events(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    async with box.http.ws_connect(f"/websocket/?token={room.teacher_token}") as ws:
        await receive_json(ws)
        await ws.send_json({"type": "event", "stream": "t", **ev(1)})
        assert (await receive_type(ws, "error"))["error"]["code"] == "forbidden"
    assert await stored_seqs(box.app[DB], "t") == []


WS_BURST = 20
WS_PERIOD_S = 0.25  # 80 events/s per headset: under the per-connection frame limit


async def _ws_stream(
    url: str, token: str, stream: str, first: int, last: int | None, acked: dict[str, int]
) -> int:
    """Send seqs first.. (to `last`, or until the connection dies) in paced bursts while
    recording acks; returns the highest seq sent."""
    sent = first - 1
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{url}/websocket/?token={token}") as ws,
        ):
            await receive_json(ws)

            async def read_acks() -> None:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    body = msg.json()
                    if body.get("type") == "event_ack" and body["stream"] == stream:
                        acked[stream] = max(acked.get(stream, 0), body["seq"])

            reader = asyncio.create_task(read_acks())
            try:
                while last is None or sent < last:
                    top = sent + WS_BURST if last is None else min(last, sent + WS_BURST)
                    for seq in range(sent + 1, top + 1):
                        await ws.send_json(
                            {
                                "type": "event",
                                "stream": stream,
                                **ev(seq, "progress", progress=0.01),
                            }
                        )
                        sent = seq
                    await asyncio.sleep(WS_PERIOD_S)
                    if reader.done():
                        break
                if last is not None:
                    async with asyncio.timeout(15):
                        while acked.get(stream, 0) < last:  # noqa: ASYNC110 - acks arrive via reader
                            await asyncio.sleep(0.02)
            finally:
                reader.cancel()
    except (aiohttp.ClientError, ConnectionError):
        pass
    return sent


async def test_kill_9_while_websocket_clients_stream(tmp_path: Path) -> None:
    """10 headsets stream over the WebSocket; the box is killed -9; every acknowledged event
    is in the database exactly once, and after a restart the resent rest completes."""
    data_dir = tmp_path / "data"
    first = spawn_serve(data_dir)
    db = Database(f"sqlite+aiosqlite:///{(data_dir / 'vrlms.sqlite3').resolve()}")
    try:
        room = await classroom(db, students=CLIENTS)
        acked: dict[str, int] = {}
        tasks = [
            asyncio.create_task(_ws_stream(first.url, hs.token, f"w{i}", 1, None, acked))
            for i, hs in enumerate(room.students)
        ]
        for _ in range(300):
            if len(acked) == CLIENTS and min(acked.values()) >= 2 * WS_BURST:
                break
            await asyncio.sleep(0.02)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        first.proc.communicate(timeout=10)
        sent = await asyncio.wait_for(asyncio.gather(*tasks), 20)
        assert len(acked) == CLIENTS
        for i in range(CLIENTS):
            seqs = await stored_seqs(db, f"w{i}")
            assert len(seqs) == len(set(seqs))
            assert set(range(1, acked[f"w{i}"] + 1)) <= set(seqs), i
            assert max(seqs) <= sent[i]

        second = spawn_serve(data_dir)
        try:
            # Each headset resends everything after its last ack, then a few new ones.
            resent = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        _ws_stream(
                            second.url, hs.token, f"w{i}", acked[f"w{i}"] + 1, sent[i] + 5, acked
                        )
                        for i, hs in enumerate(room.students)
                    )
                ),
                30,
            )
        finally:
            second.proc.terminate()
            second.proc.communicate(timeout=10)
        for i in range(CLIENTS):
            assert acked[f"w{i}"] == resent[i] == sent[i] + 5
            assert await stored_seqs(db, f"w{i}") == list(range(1, sent[i] + 6))
    finally:
        await db.dispose()
        if first.proc.poll() is None:
            first.proc.kill()
