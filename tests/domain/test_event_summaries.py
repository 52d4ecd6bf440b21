"""Event summaries on the box: counts equal a recount of the stored events, only summaries with
new events change, a second call changes nothing, the watermark survives the deletion of the
events it names (rowids then repeat), and slices count every event exactly once."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from sqlalchemy import delete, func, literal_column, select

from tests.conftest import RunningBox
from tests.factories import TrackingRoom, auth, classroom, make_session
from vrlms_edge.domain.event_summaries import (
    KIND_COLUMNS,
    WATERMARK_KEY,
    summarise_events,
    summary_id,
)
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    EventSummary,
    InteractionEvent,
    OutboxEntry,
    SyncState,
    new_id,
)

T0 = int(time.time() * 1000) - 120_000


async def send(box: RunningBox, room: TrackingRoom, who: int, stream: str, kinds: str) -> None:
    """One event per letter: g gaze, c click, a action, p progress, r result, s lesson_start."""
    names = {"g": "gaze", "c": "click", "a": "action", "p": "progress", "r": "result"}
    student = room.students[who]
    events = [
        {
            "seq": i + 1,
            "kind": names.get(k, "lesson_start"),
            "t_ms": T0 + i * 1000,
            "lesson_id": room.lessons[0].id,
            "data": {"progress": i / 100, "score": i} if k in "pr" else {},
        }
        for i, k in enumerate(kinds)
    ]
    body = {"device_id": student.device.device_id, "stream": stream, "events": events}
    async with box.http.post("/api/events/", json=body, headers=auth(student.token)) as resp:
        assert resp.status == 200, await resp.text()


async def recount(db: Database) -> dict[str, tuple[int, ...]]:
    """The summaries computed the slow way: every event read and counted in Python."""
    async with db.read() as s:
        in_sessions = InteractionEvent.session_id.is_not(None)
        events = (await s.execute(select(InteractionEvent).where(in_sessions))).scalars()
        groups: dict[str, list[InteractionEvent]] = {}
        for e in events:
            assert e.session_id is not None and e.user_id is not None
            groups.setdefault(summary_id(e.session_id, e.user_id, e.lesson_id), []).append(e)
    out = {}
    for key, group in groups.items():
        kinds = Counter(e.kind for e in group)
        counted = [kinds[k] for k in KIND_COLUMNS]
        out[key] = (
            len(group),
            *counted,
            len(group) - sum(counted),
            min(e.t_ms for e in group),
            max(e.t_ms for e in group),
        )
    return out


async def stored(db: Database) -> dict[str, tuple[int, ...]]:
    async with db.read() as s:
        rows = (await s.execute(select(EventSummary))).scalars()
        return {
            r.id: (
                r.events,
                r.gaze,
                r.clicks,
                r.actions,
                r.progress_events,
                r.result_events,
                r.other_events,
                r.first_event_ms,
                r.last_event_ms,
            )
            for r in rows
        }


async def queued(db: Database) -> dict[str, int]:
    async with db.read() as s:
        rows = await s.execute(
            select(OutboxEntry.entity_id, OutboxEntry.version).where(
                OutboxEntry.entity == "event_summaries"
            )
        )
        return {entity_id: version for entity_id, version in rows}


async def summarise(box: RunningBox, **options: Any) -> Any:
    clock = box.app[CLOCK]
    return await summarise_events(box.app[DB], clock.now(), clock.now_ms(), **options)


async def test_summaries_match_a_recount_and_follow_only_new_events(box: RunningBox) -> None:
    db = box.app[DB]
    room = await classroom(db, students=3)
    await send(box, room, 0, "a", "sgggccaprp")
    await send(box, room, 1, "b", "ggp")
    first = await summarise(box)
    assert (first.events, first.changed, first.rescanned) == (13, 2, False)
    assert await stored(db) == await recount(db)
    s0 = summary_id(room.session.id, room.students[0].user.id, room.lessons[0].id)
    assert (await stored(db))[s0][:7] == (10, 3, 2, 1, 2, 1, 1)
    async with db.read() as s:
        row = await s.get(EventSummary, s0)
    assert row is not None and (row.last_progress, row.last_score) == (0.09, 8.0)
    assert (row.last_progress_ms, row.last_score_ms) == (T0 + 9000, T0 + 8000)
    versions = await queued(db)
    assert set(versions) == set(await stored(db))

    # Nothing new: nothing recomputed, nothing queued again.
    idle = await summarise(box)
    assert (idle.events, idle.changed) == (0, 0)
    assert await queued(db) == versions

    # New events of one student: only their summary changes and is queued anew.
    await send(box, room, 2, "c", "c")
    await send(box, room, 0, "a2", "gg")
    later = await summarise(box)
    assert (later.events, later.changed) == (3, 2)
    assert await stored(db) == await recount(db)
    now_queued = await queued(db)
    s1 = summary_id(room.session.id, room.students[1].user.id, room.lessons[0].id)
    assert now_queued[s1] == versions[s1] and now_queued[s0] > versions[s0]
    assert len(now_queued) == 3


async def test_watermark_survives_deleting_the_events_it_names(box: RunningBox) -> None:
    db = box.app[DB]
    room = await classroom(db, students=2)
    await send(box, room, 0, "a", "gggg")
    await send(box, room, 1, "b", "cc")
    await summarise(box)
    # The newest events go (a removed headset, say): the next rowids repeat old ones.
    rowid = literal_column("interaction_events.rowid")
    async with db.write() as s:
        mark = (await s.get(SyncState, WATERMARK_KEY)).value  # type: ignore[union-attr]
        await s.execute(delete(InteractionEvent).where(rowid > mark["rowid"] - 3))
    await send(box, room, 1, "b2", "aaa")
    async with db.read() as s:
        highest = (
            await s.execute(select(func.max(rowid)).where(InteractionEvent.stream == "b2"))
        ).scalar_one()
    assert highest <= mark["rowid"]  # every new event took a rowid the watermark covers
    report = await summarise(box)
    assert report.rescanned and report.changed >= 1
    assert await stored(db) == await recount(db)
    assert (await summarise(box)).changed == 0


async def test_many_sessions_are_counted_in_slices_exactly_once(box: RunningBox) -> None:
    db = box.app[DB]
    room = await classroom(db, students=1)
    count = 23
    sessions = [
        await make_session(db, room.org, room.klass, room.lessons[:1]) for _ in range(count)
    ]
    headset = room.students[0]
    async with db.write() as s:
        s.add_all(
            InteractionEvent(
                id=new_id(),
                org_id=room.org.id,
                device_id=headset.device.id,
                user_id=headset.user.id,
                session_id=session.id,
                lesson_id=None,
                stream="bulk",
                seq=i + 1,
                kind="gaze",
                t_ms=T0 + i,
                received_ms=T0 + i,
                data=json.loads("{}"),
            )
            for i, session in enumerate(sessions)
        )
    report = await summarise(box, slice_events=5)
    assert (report.events, report.changed) == (count, count)
    assert len(await stored(db)) == count == len(await queued(db))
    assert await stored(db) == await recount(db)
    # More events of some sessions, counted in slices again: added, not counted twice.
    await send(box, room, 0, "live", "gcapr" * 3)
    again = await summarise(box, slice_events=4)
    assert (again.events, again.changed) == (15, 1)
    assert await stored(db) == await recount(db)
