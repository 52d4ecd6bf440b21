"""Sync survives a hostile link and killed processes: a fault proxy between box and org
server cuts requests and answers, answers 500 and delays; the box (`vrlms-edge serve`) is
SIGKILLed mid-push and the org server (`vrlms-edge cloud serve`) mid-commit. Afterwards the
org server holds exactly the box's results (same count, same content, no duplicates) and the
box's outbox is empty. Event summaries made from events stored meanwhile arrive the same way:
exactly the box's summaries, each once, with the counts of all events."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import ServeProcess, cli_env, spawn_serve, start_box, stop_box
from tests.conftest import test_settings as box_settings
from tests.orgserver import (
    CloudProcess,
    World,
    make_results,
    result_content,
    seed_org,
    spawn_cloud,
    token_for,
)
from tests.sync.faultproxy import FaultProxy
from vrlms_edge.cloud.store import OrgDatabase
from vrlms_edge.domain.event_summaries import summary_id
from vrlms_edge.keys import CLOCK, DB, SETTINGS
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    Device,
    EventSummary,
    InteractionEvent,
    OutboxEntry,
    Result,
    Session,
    new_id,
)
from vrlms_edge.sync.enrollment import enroll
from vrlms_edge.sync.outbox import enqueue_rows
from vrlms_edge.sync.worker import sync_once

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BOX_ENV = {
    "VRLMS_SYNC_INTERVAL_S": "0.2",
    "VRLMS_SYNC_RETRY_BASE_S": "0.05",
    "VRLMS_SYNC_BACKOFF_MAX_S": "0.4",
    "VRLMS_SYNC_PAGE_SIZE": "40",
    "VRLMS_LOG_LEVEL": "WARNING",
}


def _spawn_box(data: Path) -> ServeProcess:
    return spawn_serve(data, env=cli_env(**BOX_ENV))


def _kill(proc: ServeProcess | CloudProcess) -> None:
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(timeout=10)
    if proc.proc.stdout is not None:
        proc.proc.stdout.close()
    if isinstance(proc, ServeProcess) and proc.proc.stderr is not None:
        proc.proc.stderr.close()


async def _count(db: Database, model: type[Result] | type[OutboxEntry]) -> int:
    async with db.read() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def _rescore(db: Database, every: int) -> None:
    """Change some results again: a newer version of rows that may be in flight."""
    async with db.write() as s:
        rows = list((await s.execute(select(Result).order_by(Result.id))).scalars())[::every]
        for row in rows:
            row.score = (row.score or 0) + 1
            row.time_spent_ms += 7
        await enqueue_rows(s, rows)  # type: ignore[arg-type]


async def _add_events(
    db: Database, world: World, session: Session, device: Device, stream: str, count: int
) -> None:
    """Events as the batch writer stores them, spread over the org's students."""
    kinds = ("gaze", "click", "action", "progress")
    async with db.write() as s:
        s.add_all(
            InteractionEvent(
                id=new_id(),
                org_id=world.org.id,
                device_id=device.id,
                user_id=world.students[i % len(world.students)].id,
                session_id=session.id,
                lesson_id=world.lessons[0].id,
                stream=stream,
                seq=i + 1,
                kind=kinds[i % len(kinds)],
                t_ms=1_000_000 + i,
                received_ms=1_000_000 + i,
                data={"progress": i / count},
            )
            for i in range(count)
        )


def _summary_content(r: EventSummary) -> tuple[object, ...]:
    return (r.id, r.user_id, r.events, r.gaze, r.clicks, r.actions, r.progress_events)


async def _summaries(db: Database) -> list[tuple[object, ...]]:
    async with db.read() as s:
        return sorted(map(_summary_content, (await s.execute(select(EventSummary))).scalars()))


async def _event_counts(db: Database, session: Session, lesson_id: str) -> list[tuple[object, ...]]:
    async with db.read() as s:
        rows = await s.execute(
            select(InteractionEvent.user_id, func.count())
            .where(InteractionEvent.session_id == session.id)
            .group_by(InteractionEvent.user_id)
        )
        return sorted(
            (summary_id(session.id, str(user_id), lesson_id), n) for user_id, n in rows.all()
        )


async def _until(check: object, timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s} s")
        await asyncio.sleep(0.1)


async def test_link_faults_and_kills_lose_and_duplicate_nothing(
    pg_url: str, tmp_path: Path, box_dir: Callable[[str], Path]
) -> None:
    org_db = OrgDatabase(pg_url)
    world: World = await seed_org(org_db, "storm")
    cloud = spawn_cloud(pg_url, tmp_path / "cloud")
    cloud_port = int(cloud.url.rsplit(":", 1)[1])
    proxy = FaultProxy(cloud_port, delay_s=0.4)
    await proxy.start()
    data = box_dir("box")
    box_proc: ServeProcess | None = None
    box_db = Database(f"sqlite+aiosqlite:///{data / 'vrlms.sqlite3'}")
    try:
        # Enroll through the proxy and take the roster, then hand the data dir to a real box.
        box = await start_box(box_settings(data, sync_worker=False))
        token = await token_for(org_db, world.org.id)
        await enroll(box.app[DB], box.app[CLOCK], data, proxy.url, token)
        await sync_once(box.app[DB], box.app[SETTINGS], box.app[CLOCK])
        # A session with a headset whose events the box summarises on every sync run.
        async with box.app[DB].write() as s:
            device = Device(org_id=world.org.id, device_id="hs-storm", name="hs-storm")
            session = Session(org_id=world.org.id, class_id=world.klass.id, title="Storm")
            s.add_all([device, session])
        await stop_box(box)
        box_proc = _spawn_box(data)

        # 1. A hostile link: cuts mid-request and mid-answer, 500s, delays.
        proxy.plan.extend(["cut_request", "cut_response", "http500", "delay"] * 2)
        proxy.chaos(random.Random(7), p=0.6)
        await make_results(box_db, world, 300)
        await _add_events(box_db, world, session, device, "one", 500)
        await asyncio.sleep(2.0)
        await _rescore(box_db, every=5)
        await asyncio.sleep(1.0)

        # 2. SIGKILL the box while a push is on the wire (answers held back by the proxy).
        proxy.calm()
        proxy.plan.extend(["delay"] * 50)
        proxy.seen_push.clear()
        await make_results(box_db, world, 200, score=0.25)
        await asyncio.wait_for(proxy.seen_push.wait(), 20)
        _kill(box_proc)
        box_proc = _spawn_box(data)

        # 3. SIGKILL the org server while it applies a push.
        proxy.calm()
        proxy.seen_push.clear()
        await _rescore(box_db, every=3)
        await make_results(box_db, world, 200, score=0.75)
        await _add_events(box_db, world, session, device, "two", 400)
        await asyncio.wait_for(proxy.seen_push.wait(), 20)
        await asyncio.sleep(random.Random(3).uniform(0.0, 0.05))
        _kill(cloud)
        await asyncio.sleep(0.5)
        cloud = spawn_cloud(pg_url, tmp_path / "cloud", port=cloud_port)

        # 4. Recovery: the link is clean again.
        proxy.calm()

        async def drained() -> bool:
            if await _count(box_db, OutboxEntry) != 0:
                return False
            # ... and the summaries cover every event (a run after the last events ended).
            box_summaries = await _summaries(box_db)
            counted = [(r[0], r[2]) for r in box_summaries]
            return counted == await _event_counts(box_db, session, world.lessons[0].id)

        await _until(drained, 60, "outbox drained")
        async with box_db.read() as s:
            mine = sorted(result_content(r) for r in (await s.execute(select(Result))).scalars())
        async with org_db.read() as s:
            theirs = sorted(result_content(r) for r in (await s.execute(select(Result))).scalars())
        assert len(mine) == 700
        assert len(theirs) == len(mine)
        assert len({r[0] for r in theirs}) == len(theirs)  # no duplicate ids
        assert theirs == mine  # same content, newest versions
        # Summaries: exactly the box's, one row per student, all 900 events counted.
        summaries = await _summaries(box_db)
        assert len(summaries) == 3 and sum(r[2] for r in summaries) == 900  # type: ignore[misc]
        assert await _summaries(org_db) == summaries
        assert proxy.counts["cut_request"] and proxy.counts["cut_response"]
        assert proxy.counts["http500"] and proxy.counts["delay"]
    finally:
        if box_proc is not None and box_proc.proc.poll() is None:
            _kill(box_proc)
        if cloud.proc.poll() is None:
            cloud.proc.terminate()
            cloud.proc.wait(timeout=10)
        if cloud.proc.stdout is not None:
            cloud.proc.stdout.close()
        await proxy.close()
        await box_db.dispose()
        await org_db.dispose()
