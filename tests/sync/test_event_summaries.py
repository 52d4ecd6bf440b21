"""Event summaries travel up: events ingested on a box (REST ingest, as headsets send them)
become per session/student/lesson summaries on the org server after `sync_once`; more events
update the same rows; a sync without new events changes nothing; the org-wide API and page
show them; a box cannot push summaries naming another org's session or student."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import RunningBox, stop_box
from tests.factories import add_headset_device, auth, make_session, token_for
from tests.orgserver import RunningCloud, World, enrolled_box, seed_org
from vrlms_edge.cloud.orgs import add_admin
from vrlms_edge.domain.event_summaries import summary_id
from vrlms_edge.keys import CLOCK, DB, SETTINGS
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import BoxIdentity, EventSummary, OutboxEntry, Session, SyncReceipt
from vrlms_edge.sync.client import OrgServerClient, OrgServerRefused, OrgServerUnavailable
from vrlms_edge.sync.enrollment import enrolled
from vrlms_edge.sync.identity import load_or_create_key
from vrlms_edge.sync.messages import PushItem, PushRequest
from vrlms_edge.sync.outbox import row_payload
from vrlms_edge.sync.worker import sync_once

pytestmark = pytest.mark.postgres

# Two minutes ago: inside the playing session (started an hour ago).
T0 = int(time.time() * 1000) - 120_000


def ev(seq: int, kind: str, dt: int, lesson: str | None, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "t_ms": T0 + dt, "lesson_id": lesson, "data": data}


class Student:
    def __init__(self, device_id: str, token: str, user_id: str) -> None:
        self.device_id, self.token, self.user_id = device_id, token, user_id


async def headsets(box: RunningBox, world: World, count: int) -> list[Student]:
    """Approved headsets bound to the first `count` students (devices are box-authored)."""
    db, clock = box.app[DB], box.app[CLOCK]
    out = []
    for i, user in enumerate(world.students[:count]):
        device = await add_headset_device(db, world.org, f"hs-{i}", bound_user=user)
        out.append(Student(device.device_id, await token_for(db, clock, user, device), user.id))
    return out


async def send(box: RunningBox, who: Student, stream: str, events: list[Any]) -> None:
    body = {"device_id": who.device_id, "stream": stream, "events": events}
    async with box.http.post("/api/events/", json=body, headers=auth(who.token)) as resp:
        assert resp.status == 200, await resp.text()


def content(r: EventSummary) -> tuple[Any, ...]:
    return (
        r.id,
        r.org_id,
        r.session_id,
        r.user_id,
        r.lesson_id,
        r.events,
        r.gaze,
        r.clicks,
        r.actions,
        r.progress_events,
        r.result_events,
        r.other_events,
        r.first_event_ms,
        r.last_event_ms,
        r.last_progress,
        r.last_score,
    )


async def summaries(db: Database) -> dict[str, EventSummary]:
    async with db.read() as s:
        return {r.id: r for r in (await s.execute(select(EventSummary))).scalars()}


async def test_event_summaries_reach_org_server_and_update_in_place(
    cloud: RunningCloud, tmp_path: Path, box_dir: Callable[[str], Path]
) -> None:
    world = await seed_org(cloud.db, "lake")
    await add_admin(cloud.db, "lake", "boss", "correct horse battery")
    box = await enrolled_box(cloud, world, box_dir("box"))
    db = box.app[DB]
    try:
        a, b = await headsets(box, world, 2)
        session = await make_session(db, world.org, world.klass, world.lessons)
        l0, l1 = world.lessons[0].id, world.lessons[1].id
        await send(
            box,
            a,
            "a1",
            [
                ev(1, "lesson_start", 0, l0),
                ev(2, "gaze", 1_000, l0, target="board"),
                ev(3, "gaze", 2_000, l0, target="board"),
                ev(4, "click", 3_000, l0, target="b1"),
                ev(5, "progress", 4_000, l0, progress=0.25),
                ev(6, "progress", 9_000, l0, progress="lots"),  # not a number: counted only
                ev(7, "action", 10_000, l0, action="grab"),
                ev(8, "progress", 8_000, l0, progress=0.5),  # newest numeric progress by t_ms
                ev(9, "result", 12_000, l0, score=0.75),
                ev(10, "gaze", 13_000, l1, target="x"),  # a second lesson: a second summary
                ev(11, "click", 14_000, "no-such-lesson"),  # unknown lesson: lesson null
            ],
        )
        await send(box, b, "b1", [ev(1, "gaze", 500, l0), ev(2, "progress", 700, l0, progress=2)])

        report = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert report.summarised == 4
        assert report.by_entity.get("event_summaries") == 4
        # The session was not queued on its own: the org server asked for it ("missing").
        assert report.by_entity.get("sessions") == 1 and report.outbox_left == 0

        mine = await summaries(db)
        theirs = await summaries(cloud.db)
        assert sorted(map(content, theirs.values())) == sorted(map(content, mine.values()))
        first = theirs[summary_id(session.id, a.user_id, l0)]
        assert (first.events, first.gaze, first.clicks, first.actions) == (9, 2, 1, 1)
        assert (first.progress_events, first.result_events, first.other_events) == (3, 1, 1)
        assert (first.first_event_ms, first.last_event_ms) == (T0, T0 + 12_000)
        assert (first.last_progress, first.last_score, first.org_id) == (0.5, 0.75, world.org.id)
        other_lesson = theirs[summary_id(session.id, a.user_id, l1)]
        assert (other_lesson.events, other_lesson.gaze) == (1, 1)
        no_lesson = theirs[summary_id(session.id, a.user_id, None)]
        assert (no_lesson.lesson_id, no_lesson.clicks, no_lesson.last_progress) == (None, 1, None)
        second = theirs[summary_id(session.id, b.user_id, l0)]
        assert (second.events, second.last_progress) == (2, 1.0)  # clamped like results

        # More events later: the same row is updated, no second row.
        await send(
            box,
            a,
            "a2",
            [ev(1, "click", 20_000, l0), ev(2, "progress", 21_000, l0, progress=0.9)],
        )
        await send(box, a, "a1", [ev(11, "click", 14_000, "no-such-lesson")])  # a resend
        again = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert again.summarised == 1 and again.by_entity["event_summaries"] == 1
        theirs = await summaries(cloud.db)
        assert len(theirs) == 4
        updated = theirs[first.id]
        assert (updated.events, updated.clicks, updated.progress_events) == (11, 2, 4)
        assert (updated.last_event_ms, updated.last_progress) == (T0 + 21_000, 0.9)
        assert sorted(map(content, theirs.values())) == sorted(
            map(content, (await summaries(db)).values())
        )

        # A sync without new events changes nothing on either side.
        stamps = {i: r.updated_at for i, r in theirs.items()}
        idle = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert (idle.summarised, idle.pushed) == (0, 0)
        assert {i: r.updated_at for i, r in (await summaries(cloud.db)).items()} == stamps
        async with cloud.db.read() as s:
            receipts = (
                await s.execute(
                    select(func.count())
                    .select_from(SyncReceipt)
                    .where(SyncReceipt.entity == "event_summaries")
                )
            ).scalar_one()
        assert receipts == 4

        # Org-wide: the API and the results page show them.
        login = await cloud.http.post(
            "/api/cloud/login/",
            json={"org": "lake", "nickname": "boss", "password": "correct horse battery"},
        )
        headers = {"Authorization": f"Bearer {(await login.json())['token']}"}
        got = await cloud.http.get("/api/cloud/event-summaries/", headers=headers)
        assert got.status == 200
        listed = (await got.json())["summaries"]
        assert len(listed) == 4 and {x["box_id"] for x in listed} == {
            (await enrolled(db)).box_id  # type: ignore[union-attr]
        }
        row = next(x for x in listed if x["id"] == first.id)
        assert (row["nickname"], row["lesson_title"], row["events"]) == ("s0", "L0", 11)
        assert row["session_title"] == "Today" and row["last_score"] == 0.75
        assert (row["last_progress_ms"], row["last_score_ms"]) == (T0 + 21_000, T0 + 12_000)
        narrowed = await cloud.http.get(
            "/api/cloud/event-summaries/", params={"user_id": b.user_id}, headers=headers
        )
        assert [x["id"] for x in (await narrowed.json())["summaries"]] == [second.id]
        assert (await cloud.http.get("/api/cloud/event-summaries/")).status == 401
        page = await cloud.http.get("/cloud/results", headers=headers)
        html = await page.text()
        assert page.status == 200 and 'id="event-summaries"' in html
        assert html.count("<tr><td>Today</td>") == 4
    finally:
        await stop_box(box)


async def test_summaries_are_made_while_offline_and_go_up_later(
    cloud: RunningCloud, tmp_path: Path, box_dir: Callable[[str], Path]
) -> None:
    world = await seed_org(cloud.db, "isle")
    box = await enrolled_box(cloud, world, box_dir("box"))
    db = box.app[DB]
    try:
        (student,) = await headsets(box, world, 1)
        await make_session(db, world.org, world.klass, world.lessons)
        await send(box, student, "s", [ev(1, "gaze", 0, world.lessons[0].id)])
        async with db.write() as s:
            ident = (await s.execute(select(BoxIdentity))).scalar_one()
            ident.org_server_url = "http://127.0.0.1:9"  # nothing listens: offline
        with pytest.raises(OrgServerUnavailable):
            await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        async with db.read() as s:
            queued = (await s.execute(select(OutboxEntry.entity))).scalars().all()
        assert "event_summaries" in queued
        async with db.write() as s:
            (await s.execute(select(BoxIdentity))).scalar_one().org_server_url = cloud.url
        back = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert back.summarised == 0 and back.by_entity["event_summaries"] == 1
        assert sorted(map(content, (await summaries(cloud.db)).values())) == sorted(
            map(content, (await summaries(db)).values())
        )
    finally:
        await stop_box(box)


async def test_box_cannot_push_summaries_of_another_org(
    cloud: RunningCloud, tmp_path: Path, box_dir: Callable[[str], Path]
) -> None:
    a = await seed_org(cloud.db, "north")
    b = await seed_org(cloud.db, "south")
    # Org B holds a session and a summary (pushed by its own box, say).
    async with cloud.db.write() as s:
        b_session = Session(org_id=b.org.id, class_id=b.klass.id, title="B's")
        s.add(b_session)
        await s.flush()
        b_summary = EventSummary(
            id=summary_id(b_session.id, b.students[0].id, None),
            org_id=b.org.id,
            session_id=b_session.id,
            user_id=b.students[0].id,
            events=3,
        )
        s.add(b_summary)
    box = await enrolled_box(cloud, a, box_dir("box"))
    db = box.app[DB]
    try:
        (student,) = await headsets(box, a, 1)
        await make_session(db, a.org, a.klass, a.lessons)
        await send(box, student, "s", [ev(1, "click", 0, a.lessons[0].id)])
        await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        (own,) = (await summaries(db)).values()
        base = row_payload(own)

        async def snapshot() -> list[tuple[Any, ...]]:
            async with cloud.db.read() as s:
                rows = (await s.execute(select(EventSummary))).scalars()
                return sorted((*content(r), r.updated_at) for r in rows)

        before = await snapshot()
        ident = await enrolled(db)
        assert ident is not None
        key = load_or_create_key(box_dir("box"))

        def item(**changes: Any) -> PushItem:
            data = {**base, **changes}
            return PushItem(entity="event_summaries", id=data["id"], version=99, data=data)

        attempts = [
            [item(org_id=b.org.id)],  # claims org B
            [item(session_id=b_session.id)],  # org A row naming org B's session
            [item(user_id=b.students[0].id)],  # ... or org B's student
            [item(lesson_id=b.lessons[0].id)],  # ... or org B's lesson
            [item(id=b_summary.id, events=0)],  # overwrite org B's summary by id
            [item(events=50), item(id="f" * 36, org_id=b.org.id)],  # one bad: all refused
        ]
        async with OrgServerClient(cloud.url, ident.box_id, key, box.app[CLOCK]) as org:
            for items in attempts:
                with pytest.raises(OrgServerRefused) as refused:
                    await org.push(PushRequest(items=items))
                assert (refused.value.status, refused.value.code) == (403, "foreign_org")
        assert await snapshot() == before
        async with db.read() as s:
            assert (await s.execute(select(func.count()).select_from(OutboxEntry))).scalar() == 0
    finally:
        await stop_box(box)
