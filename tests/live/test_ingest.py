"""Event ingest: exactly-once storage, contiguous acks, back-pressure, bad input, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from tests.conftest import RunningBox, spawn_serve
from tests.factories import TrackingRoom, auth, classroom
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
        await ingest.submit(e, sink)
    assert ingest.backlog == 3
    with pytest.raises(Exception) as refused:
        await ingest.submit(origin_events[3], sink)
    assert getattr(refused.value, "code", None) == "busy"
    assert ingest.backlog == 3
    waiting = asyncio.create_task(ingest.submit(origin_events[3], sink))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    writer = asyncio.create_task(ingest.run())
    await asyncio.wait_for(waiting, 2)
    await ingest.submit(origin_events[4], sink)
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


# --- kill -9 of the real server while clients stream -----------------------------------------


CLIENTS = 10
BATCH = 20


async def _stream_until_killed(
    url: str, room: TrackingRoom, index: int, acked: dict[int, int], sent: dict[int, int]
) -> None:
    who = room.students[index]
    seq = 0
    async with aiohttp.ClientSession(url) as http:
        while True:
            events = [ev(seq + i + 1, "progress", progress=0.01) for i in range(BATCH)]
            seq += BATCH
            sent[index] = seq
            body = {"device_id": who.device.device_id, "stream": f"k{index}", "events": events}
            try:
                async with http.post("/api/events/", json=body, headers=auth(who.token)) as r:
                    if r.status == 200:
                        acked[index] = max(
                            acked.get(index, 0), (await r.json())["acked"][f"k{index}"]
                        )
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                return


async def test_kill_9_loses_no_acknowledged_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = spawn_serve(data_dir)
    db = Database(f"sqlite+aiosqlite:///{(data_dir / 'vrlms.sqlite3').resolve()}")
    try:
        room = await classroom(db, students=CLIENTS)
        acked: dict[int, int] = {}
        sent: dict[int, int] = {}
        tasks = [
            asyncio.create_task(_stream_until_killed(first.url, room, i, acked, sent))
            for i in range(CLIENTS)
        ]
        # Kill once every client has had something acknowledged (bounded wait).
        for _ in range(200):
            if len(acked) == CLIENTS and min(acked.values()) >= 3 * BATCH:
                break
            await asyncio.sleep(0.05)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        first.proc.communicate(timeout=10)
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        assert len(acked) == CLIENTS

        # Every acknowledged event survived the kill, once.
        for i in range(CLIENTS):
            seqs = await stored_seqs(db, f"k{i}")
            assert len(seqs) == len(set(seqs))
            assert set(range(1, acked[i] + 1)) <= set(seqs)

        # After a restart, the clients resend what was not acknowledged; all end up once.
        second = spawn_serve(data_dir)
        try:
            async with aiohttp.ClientSession(second.url) as http:
                for i in range(CLIENTS):
                    who = room.students[i]
                    resend = [ev(n, "progress", progress=0.01) for n in range(1, sent[i] + 1)]
                    resend = resend[acked[i] :]
                    body = {"device_id": who.device.device_id, "stream": f"k{i}", "events": resend}
                    async with http.post("/api/events/", json=body, headers=auth(who.token)) as r:
                        assert r.status == 200
                        assert (await r.json())["acked"] == {f"k{i}": sent[i]}
        finally:
            second.proc.terminate()
            second.proc.communicate(timeout=10)
        async with db.read() as s:
            total = (await s.execute(select(func.count()).select_from(InteractionEvent))).scalar()
        assert total == sum(sent.values())
        for i in range(CLIENTS):
            assert await stored_seqs(db, f"k{i}") == list(range(1, sent[i] + 1))
    finally:
        await db.dispose()
        if first.proc.poll() is None:
            first.proc.kill()
