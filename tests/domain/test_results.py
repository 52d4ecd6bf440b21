"""Results derived from events (exactly once, monotonic, time rule), attendance, analytics
numbers against hand-computed ones on a fixed event set."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from tests.conftest import RunningBox
from tests.factories import TrackingRoom, auth, classroom
from vrlms_edge.domain.results import gaze_target
from vrlms_edge.keys import DB
from vrlms_edge.store.models import Attendance, OutboxEntry, Result

# A whole minute, two minutes ago: inside the playing session (started five minutes ago).
T0 = (int(time.time() * 1000) // 60_000) * 60_000 - 120_000


def e(seq: int, kind: str, dt: int, lesson: str | None, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "t_ms": T0 + dt, "lesson_id": lesson, "data": data}


async def send(
    box: RunningBox, room: TrackingRoom, who: int, stream: str, events: list[Any]
) -> Any:
    student = room.students[who]
    body = {"device_id": student.device.device_id, "stream": stream, "events": events}
    async with box.http.post("/api/events/", json=body, headers=auth(student.token)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def results_of(box: RunningBox) -> dict[str, Result]:
    async with box.app[DB].read() as s:
        return {r.user_id: r for r in (await s.execute(select(Result))).scalars()}


async def fixed_event_set(box: RunningBox) -> TrackingRoom:
    room = await classroom(box.app[DB], students=3)
    l1 = room.lessons[0].id
    await send(
        box,
        room,
        0,
        "a",
        [
            e(1, "lesson_start", 0, l1),
            e(2, "progress", 10_000, l1, progress=0.25),
            e(3, "gaze", 11_000, l1, target="board"),
            e(4, "progress", 30_000, l1, progress=0.5),
            e(5, "progress", 40_000, l1, progress=0.4),
            e(6, "click", 41_000, l1, target="button1"),
            e(7, "gaze", 42_000, l1, yaw=45, pitch=-10),
            e(8, "action", 61_000, l1, action="grab"),
            e(9, "result", 200_000, l1, score=0.8, completed=True),
        ],
    )
    await send(
        box,
        room,
        1,
        "b",
        [
            e(1, "progress", 5_000, l1, progress=0.3),
            e(2, "gaze", 6_000, l1, target="board"),
            e(3, "gaze", 7_000, l1, target="board"),
            e(4, "gaze", 8_000, l1, target="window"),
            e(5, "progress", 65_000, l1, progress=0.6),
            e(6, "click", 70_000, l1, target="button2"),
        ],
    )
    return room


async def test_events_update_results_in_the_same_batch(box: RunningBox) -> None:
    room = await fixed_event_set(box)
    rows = await results_of(box)
    a, b = rows[room.students[0].user.id], rows[room.students[1].user.id]
    assert (a.status, a.progress, a.score) == ("completed", 1.0, 0.8)
    # Gaps between result events: 10 s + 20 s + 10 s; the 160 s gap is time away.
    assert a.time_spent_ms == 40_000
    assert (b.status, b.progress, b.score) == ("in_progress", 0.6, None)
    assert b.time_spent_ms == 60_000  # exactly IDLE_GAP_MS still counts
    assert a.session_id == room.session.id and a.lesson_id == room.lessons[0].id
    assert room.students[2].user.id not in rows
    async with box.app[DB].read() as s:
        attended = set((await s.execute(select(Attendance.user_id))).scalars())
        outbox = {(o.entity, o.entity_id) for o in (await s.execute(select(OutboxEntry))).scalars()}
    assert attended == {room.students[0].user.id, room.students[1].user.id}
    assert ("results", a.id) in outbox and ("results", b.id) in outbox


async def test_resent_events_do_not_count_twice(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    l1 = room.lessons[0].id
    batch = [e(1, "progress", 0, l1, progress=0.2), e(2, "progress", 20_000, l1, progress=0.3)]
    await send(box, room, 0, "r", batch)
    await send(box, room, 0, "r", batch)
    await send(box, room, 0, "r", [*batch, e(3, "progress", 30_000, l1, progress=0.1)])
    row = (await results_of(box))[room.students[0].user.id]
    assert row.time_spent_ms == 30_000
    assert row.progress == 0.3  # never falls
    assert row.status == "in_progress"


async def test_lifecycle_and_unknown_lesson(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    l1, l2 = room.lessons[0].id, room.lessons[1].id
    await send(
        box,
        room,
        0,
        "l",
        [
            e(1, "lesson_start", 0, l1),
            e(2, "lesson_end", 1_000, l1, completed=False),
            e(3, "lesson_start", 2_000, l2),
            e(4, "complete", 3_000, l2, score=7),
            e(5, "progress", 4_000, "no-such-lesson", progress=0.5),
            e(6, "progress", 5_000, None, progress=0.5),
        ],
    )
    async with box.app[DB].read() as s:
        rows = {r.lesson_id: r for r in (await s.execute(select(Result))).scalars()}
    assert set(rows) == {l1, l2}
    assert (rows[l1].status, rows[l1].progress) == ("in_progress", 0.0)
    assert (rows[l2].status, rows[l2].progress, rows[l2].score) == ("completed", 1.0, 7.0)


def test_gaze_target_rule() -> None:
    assert gaze_target({"target": "board"}) == "board"
    assert gaze_target({"yaw": 45, "pitch": -10}) == "yaw:30/pitch:-30"
    assert gaze_target({"yaw": -0.5, "pitch": 89.9}) == "yaw:-30/pitch:60"
    assert gaze_target({"yaw": "x", "pitch": 1}) is None
    assert gaze_target({}) is None


async def test_analytics_numbers_match_hand_computed(box: RunningBox) -> None:
    room = await fixed_event_set(box)
    url = f"/api/sessions/{room.session.id}/analytics"
    async with box.http.get(url, headers=auth(room.teacher_token)) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["session_id"] == room.session.id
    assert body["gaze"] == {"board": 3, "yaw:30/pitch:-30": 1, "window": 1}
    assert body["timeline"] == [
        {"minute_ms": T0, "click": 1, "action": 0},
        {"minute_ms": T0 + 60_000, "click": 1, "action": 1},
    ]
    assert [(a["t_ms"] - T0, a["kind"], a["target"]) for a in body["actions"]] == [
        (41_000, "click", "button1"),
        (61_000, "action", "grab"),
        (70_000, "click", "button2"),
    ]
    students = {s["user_id"]: s for s in body["students"]}
    a, b, c = (students[st.user.id] for st in room.students)
    assert (a["events"], a["attended"], a["gaze"]) == (
        9,
        True,
        {"board": 1, "yaw:30/pitch:-30": 1},
    )
    assert a["lessons"] == [
        {
            "lesson_id": room.lessons[0].id,
            "status": "completed",
            "progress": 1.0,
            "score": 0.8,
            "time_spent_ms": 40_000,
        }
    ]
    assert (b["events"], b["gaze"]) == (6, {"board": 2, "window": 1})
    assert b["lessons"][0]["time_spent_ms"] == 60_000
    assert (c["events"], c["attended"], c["lessons"], c["gaze"]) == (0, False, [], {})
    # Students may not read analytics; another org's session does not exist for you.
    async with box.http.get(url, headers=auth(room.students[0].token)) as resp:
        assert resp.status == 403
    other = await classroom(box.app[DB], slug="other")
    async with box.http.get(url, headers=auth(other.teacher_token)) as resp:
        assert resp.status == 404
