"""The sync worker against a real org server on PostgreSQL: roster down, results up,
pages applied twice change nothing, stages only go forward, offline backlog drains."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from tests.conftest import start_box, stop_box
from tests.conftest import test_settings as box_settings
from tests.orgserver import (
    RunningCloud,
    enrolled_box,
    make_results,
    result_content,
    seed_org,
    token_for,
)
from tests.sync.faultproxy import FaultProxy
from vrlms_edge.errors import AppError
from vrlms_edge.keys import CLOCK, DB, SETTINGS
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    Class,
    Enrollment,
    Lesson,
    OutboxEntry,
    Result,
    ResultStatus,
    Role,
    Session,
    SyncState,
    User,
)
from vrlms_edge.sync.enrollment import enroll
from vrlms_edge.sync.worker import SyncError, advance, backoff_s, sync_once, sync_status

pytestmark = pytest.mark.postgres


async def _dump(db: Database) -> dict[str, Any]:
    async with db.read() as s:
        out: dict[str, Any] = {}
        for model in (User, Class, Enrollment, Lesson):
            rows = (await s.execute(select(model))).scalars().all()
            out[model.__tablename__] = sorted(
                (r.id, getattr(r, "nickname", None) or getattr(r, "name", None), r.deleted_at)
                for r in rows
            )
        return out


async def test_roster_changes_on_org_server_appear_on_box(
    cloud: RunningCloud, tmp_path: Path
) -> None:
    world = await seed_org(cloud.db, "west")
    box = await enrolled_box(cloud, world, tmp_path / "box")
    db = box.app[DB]
    try:
        first = await _dump(db)
        assert len(first["users"]) == 4 and len(first["lessons"]) == 2
        assert len(first["enrollments"]) == 3

        gone = world.students[0]
        async with cloud.db.write() as s:
            s.add(User(org_id=world.org.id, role=Role.student, nickname="new", display_name="N"))
            (await s.get(Class, world.klass.id)).name = "5B"  # type: ignore[union-attr]
            (await s.get(User, gone.id)).deleted_at = cloud.app[CLOCK].now()  # type: ignore[union-attr]
            await s.execute(delete(Enrollment).where(Enrollment.user_id == gone.id))
        report = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert report.pulled >= 4
        after = await _dump(db)
        nicknames = {name for _, name, deleted in after["users"] if deleted is None}
        assert nicknames == {"teach", "s1", "s2", "new"}
        assert [name for _, name, _ in after["classes"]] == ["5B"]
        live_enrollments = [e for e in after["enrollments"] if e[2] is None]
        assert len(live_enrollments) == 2  # the hard delete arrived as a tombstone

        # Applying every page again (cursor back to 0) changes nothing.
        async with db.write() as s:
            (await s.get(SyncState, "pull_cursor")).value = {"cursor": 0}  # type: ignore[union-attr]
        again = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert again.pulled > 0
        assert await _dump(db) == after
    finally:
        await stop_box(box)


async def test_box_results_appear_on_org_server(cloud: RunningCloud, tmp_path: Path) -> None:
    world = await seed_org(cloud.db, "valley")
    box = await enrolled_box(cloud, world, tmp_path / "box")
    db = box.app[DB]
    try:
        ids = await make_results(db, world, 5)
        report = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert (report.pushed, report.confirmed, report.outbox_left) == (5, 5, 0)

        # A later change of one result travels as the newest state of the same row.
        async with db.write() as s:
            from vrlms_edge.sync.outbox import enqueue_row

            row = await s.get(Result, ids[0])
            assert row is not None
            row.score = 0.99
            await enqueue_row(s, row)
        await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        async with db.read() as s:
            mine = sorted(result_content(r) for r in (await s.execute(select(Result))).scalars())
        async with cloud.db.read() as s:
            theirs = sorted(result_content(r) for r in (await s.execute(select(Result))).scalars())
        assert theirs == mine and len(theirs) == 5
        assert any(score == 0.99 for *_, score, _ in theirs)
        status = await sync_status(db)
        assert status.outbox == 0 and status.last_error is None and status.stage == "done"
        boxes = (await cloud.http.get("/api/health")).status  # the org server answers at all
        assert boxes in (200, 404)
    finally:
        await stop_box(box)


async def test_a_row_the_org_server_lacks_is_sent_first(
    cloud: RunningCloud, tmp_path: Path
) -> None:
    """A result refers to a session the box never queued: the org server names it as
    missing, the box queues the session and both arrive in the same run."""
    world = await seed_org(cloud.db, "hill")
    box = await enrolled_box(cloud, world, tmp_path / "box")
    db = box.app[DB]
    try:
        async with db.write() as s:
            session = Session(org_id=world.org.id, class_id=world.klass.id, title="Mars")
            s.add(session)
            await s.flush()
            result = Result(
                org_id=world.org.id,
                user_id=world.students[0].id,
                lesson_id=world.lessons[0].id,
                session_id=session.id,
                status=ResultStatus.in_progress,
                progress=0.5,
            )
            s.add(result)
            from vrlms_edge.sync.outbox import enqueue_row

            await enqueue_row(s, result)
        report = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert report.missing == 1 and report.outbox_left == 0
        async with cloud.db.read() as s:
            assert (await s.get(Session, session.id)) is not None
            stored = await s.get(Result, result.id)
        assert stored is not None and stored.session_id == session.id
    finally:
        await stop_box(box)


async def test_stages_only_move_forward_and_a_killed_push_resumes(
    cloud: RunningCloud, tmp_path: Path
) -> None:
    world = await seed_org(cloud.db, "lake")
    box = await enrolled_box(cloud, world, tmp_path / "box")
    db = box.app[DB]
    try:
        await advance(db, 7, "pushing")
        with pytest.raises(SyncError):
            await advance(db, 7, "pulling")
        await make_results(db, world, 3)
        # As if the process died while pushing run 7: the next run resumes there.
        report = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert report.resumed_from == "pushing" and report.pull_pages == 0
        assert report.confirmed == 3
        status = await sync_status(db)
        assert (status.run, status.stage) == (7, "done")
        fresh = await sync_once(db, box.app[SETTINGS], box.app[CLOCK])
        assert fresh.resumed_from is None and fresh.pull_pages == 1
    finally:
        await stop_box(box)


async def test_org_authored_rows_are_read_only_on_an_enrolled_box(
    cloud: RunningCloud, tmp_path: Path
) -> None:
    world = await seed_org(cloud.db, "dale")
    box = await enrolled_box(cloud, world, tmp_path / "box")
    db = box.app[DB]
    try:
        with pytest.raises(AppError) as refused:
            async with db.write() as s:
                s.add(User(org_id=world.org.id, role=Role.student, nickname="x", display_name="X"))
        assert (refused.value.status, refused.value.code) == (409, "managed_by_org_server")
        with pytest.raises(AppError):
            async with db.write() as s:
                lesson = await s.get(Lesson, world.lessons[0].id)
                assert lesson is not None
                lesson.title = "changed on the box"
        async with db.read() as s:
            lesson = await s.get(Lesson, world.lessons[0].id)
            count = (await s.execute(select(func.count()).select_from(User))).scalar_one()
        assert lesson is not None and lesson.title == "L0" and count == 4
        # What the box authors stays writable.
        await make_results(db, world, 1)
    finally:
        await stop_box(box)


async def test_results_made_offline_sync_when_the_link_returns(
    cloud: RunningCloud, tmp_path: Path
) -> None:
    world = await seed_org(cloud.db, "fen")
    proxy = FaultProxy(int(cloud.url.rsplit(":", 1)[1]))
    await proxy.start()
    data = tmp_path / "box"
    settings = box_settings(
        data, sync_interval_s=0.2, sync_retry_base_s=0.05, sync_backoff_max_s=0.3
    )
    box = await start_box(settings)
    try:
        db = box.app[DB]
        await enroll(db, box.app[CLOCK], data, proxy.url, await token_for(cloud.db, world.org.id))
        await _until(lambda: _pulled(db), 20)
        proxy.down = True
        await make_results(db, world, 1000)
        await _until(lambda: _failing(db), 20)
        status = await sync_status(db)
        assert status.last_error and "Unavailable" in status.last_error
        assert status.outbox == 1000
        proxy.down = False
        await _until(lambda: _outbox_empty(db), 60)
        async with db.read() as s:
            mine = sorted(result_content(r) for r in (await s.execute(select(Result))).scalars())
        async with cloud.db.read() as s:
            theirs = sorted(result_content(r) for r in (await s.execute(select(Result))).scalars())
        assert len(theirs) == 1000 and theirs == mine
    finally:
        await stop_box(box)
        await proxy.close()


async def _pulled(db: Database) -> bool:
    async with db.read() as s:
        return (await s.execute(select(func.count()).select_from(Lesson))).scalar_one() == 2


async def _failing(db: Database) -> bool:
    return (await sync_status(db)).failures >= 2


async def _outbox_empty(db: Database) -> bool:
    async with db.read() as s:
        return (await s.execute(select(func.count()).select_from(OutboxEntry))).scalar_one() == 0


async def _until(check: Any, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout_s} s")
        await asyncio.sleep(0.05)


def test_backoff_doubles_caps_and_jitters() -> None:
    rng = random.Random(1)
    waits = [backoff_s(n, 2.0, 60.0, rng) for n in range(1, 10)]
    assert 1.0 <= waits[0] <= 2.0
    assert all(w <= 60.0 for w in waits) and max(waits) >= 30.0
    assert len({round(w, 6) for w in waits}) == len(waits)
