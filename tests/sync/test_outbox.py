"""The outbox keeps one row per object with a version that only grows."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Org, OutboxEntry
from vrlms_edge.sync.outbox import enqueue


async def test_enqueue_replaces_payload_and_bumps_version(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'box.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url, tmp_path / "box.sqlite3")
    db = Database(url)
    try:
        async with db.write() as s:
            s.add(Org(id="o1", slug="o1", name="O"))
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
    finally:
        await db.dispose()


async def _versions(db: Database, entity_id: str) -> int:
    async with db.read() as s:
        row = (
            await s.execute(select(OutboxEntry).where(OutboxEntry.entity_id == entity_id))
        ).scalar_one()
        return row.version
