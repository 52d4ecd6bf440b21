"""store/db.py: concurrent writers never see "database is locked"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from tests.conftest import RunningBox
from vrlms_edge.domain import roster
from vrlms_edge.keys import DB
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Course, Module, SyncState

TASKS = 50
WRITES_PER_TASK = 4


async def _write(db: Database, org_id: str, tag: str) -> None:
    """Read-then-write in one transaction: the pattern that deadlocks without BEGIN IMMEDIATE."""
    async with db.write() as s:
        counter = await s.get(SyncState, "n")
        course = Course(org_id=org_id, title=tag)
        s.add(course)
        await s.flush()
        s.add(Module(org_id=org_id, course_id=course.id, title=tag))
        if counter is None:
            s.add(SyncState(name="n", value={"n": 1}))
        else:
            counter.value = {"n": counter.value["n"] + 1}


async def _count(db: Database) -> tuple[int, int, int]:
    async with db.read() as s:
        courses = (await s.execute(select(func.count()).select_from(Course))).scalar_one()
        modules = (await s.execute(select(func.count()).select_from(Module))).scalar_one()
        counter = await s.get(SyncState, "n")
    return courses, modules, counter.value["n"] if counter else 0


async def test_50_concurrent_writing_tasks_all_commit(database: Database) -> None:
    org_id = (await roster.get_or_create_org(database, "school", "School")).id

    async def task(k: int) -> None:
        for n in range(WRITES_PER_TASK):
            await _write(database, org_id, f"{k}-{n}")

    results = await asyncio.gather(*(task(k) for k in range(TASKS)), return_exceptions=True)
    assert [r for r in results if r is not None] == []
    assert await _count(database) == (TASKS * WRITES_PER_TASK,) * 3


async def test_two_handles_on_one_file_write_concurrently(
    database: Database, tmp_path: Path
) -> None:
    """Two Database objects stand for two processes (the box and a CLI command): SQLite's
    busy_timeout makes one wait for the other instead of failing."""
    other = Database(database.url)
    try:
        org_id = (await roster.get_or_create_org(database, "school", "School")).id
        jobs = [
            _write(db, org_id, f"{i}-{n}")
            for i, db in enumerate([database, other] * (TASKS // 2))
            for n in range(2)
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert [r for r in results if r is not None] == []
        assert await _count(other) == (TASKS * 2,) * 3
    finally:
        await other.dispose()


async def test_the_live_box_takes_50_concurrent_writes_while_serving(box: RunningBox) -> None:
    db = box.app[DB]
    org_id = (await roster.get_or_create_org(db, "school", "School")).id

    async def health() -> int:
        async with box.http.get("/api/health") as resp:
            return resp.status

    writes = [_write(db, org_id, f"w{k}") for k in range(TASKS)]
    reads = [health() for _ in range(10)]
    results = await asyncio.gather(*writes, *reads, return_exceptions=True)
    assert results[:TASKS] == [None] * TASKS
    assert results[TASKS:] == [200] * 10
    assert await _count(db) == (TASKS,) * 3
