"""The outbox keeps one row per object with a version that only grows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Org, OutboxEntry, SyncState
from vrlms_edge.sync.outbox import VERSION_COUNTER, enqueue, enqueue_raw


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated box database with org o1."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'box.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url, tmp_path / "box.sqlite3")
    database = Database(url)
    try:
        async with database.write() as s:
            s.add(Org(id="o1", slug="o1", name="O"))
        yield database
    finally:
        await database.dispose()


async def test_enqueue_replaces_payload_and_bumps_version(db: Database) -> None:
    async with db.write() as s:
        await enqueue(s, "o1", "results", "r1", {"score": 1})
        await enqueue(s, "o1", "results", "r2", {"score": 5})
    v1, other = await _versions(db, "r1"), await _versions(db, "r2")
    async with db.write() as s:
        await enqueue(s, "o1", "results", "r1", {"score": 2})
    v2 = await _versions(db, "r1")
    assert v1 < other < v2
    async with db.read() as s:
        rows = (await s.execute(select(OutboxEntry).order_by(OutboxEntry.entity_id))).scalars()
        got = [(r.entity_id, r.version, r.payload) for r in rows]
    assert got == [("r1", v2, {"score": 2}), ("r2", other, {"score": 5})]


async def test_the_hot_lane_and_the_orm_draw_versions_from_one_counter(db: Database) -> None:
    # The raw lane creates the counter when it is the first...
    two = [("o1", "results", "a", {"n": 1}), ("o1", "results", "b", {"n": 1})]
    assert await db.write_raw(lambda conn: enqueue_raw(conn, two)) == 2
    async with db.write() as s:
        await enqueue(s, "o1", "results", "c", {"n": 1})
    # ...and continues from what the ORM reserved.
    await db.write_raw(lambda conn: enqueue_raw(conn, [("o1", "results", "a", {"n": 2})]))
    assert [await _versions(db, key) for key in ("b", "c", "a")] == [2, 3, 4]
    async with db.read() as s:
        counter = await s.get(SyncState, VERSION_COUNTER)
    assert counter is not None and counter.value == {"n": 4}


async def test_rows_queued_raw_read_back_through_the_orm(db: Database) -> None:
    payload = {"title": "Äänet ja ääni", "n": 1, "nested": {"list": [1, None, True]}}
    await db.write_raw(lambda conn: enqueue_raw(conn, [("o1", "sessions", "s1", payload)]))
    async with db.read() as s:
        first = (await s.execute(select(OutboxEntry))).scalar_one()
    assert (first.org_id, first.entity, first.entity_id, first.payload) == (
        "o1",
        "sessions",
        "s1",
        payload,
    )
    assert first.created_at == first.updated_at and first.created_at.tzinfo is not None
    await db.write_raw(lambda conn: enqueue_raw(conn, [("o1", "sessions", "s1", {"n": 2})]))
    async with db.read() as s:
        again = (await s.execute(select(OutboxEntry))).scalar_one()
    assert again.payload == {"n": 2} and again.version == first.version + 1
    assert again.created_at == first.created_at < again.updated_at  # queued since, changed now


async def _versions(db: Database, entity_id: str) -> int:
    async with db.read() as s:
        row = (
            await s.execute(select(OutboxEntry).where(OutboxEntry.entity_id == entity_id))
        ).scalar_one()
        return row.version
