"""The outbox: what this box authored that the org server has not yet confirmed.

One row per object (entity, entity_id). A newer change of the same object replaces the payload
and takes a new `version` from a box-wide counter, so versions of one object only grow, even
across rows (a confirmed row is deleted; the object's next change starts a new row with a
higher version). The org server keeps the highest version it stored per object and ignores an
older one that arrives late, and the box deletes a row only when the server confirmed exactly
that row's version.

Callers enqueue inside the same write transaction that changed the object, so the outbox and
the data can never disagree after a crash.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import Enum
from typing import Any, Final

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.store.models import Base, OutboxEntry, SyncState

# SyncState row holding the last version handed out.
VERSION_COUNTER: Final = "outbox_version"


def jsonable(value: Any) -> Any:
    """A column value as JSON (datetimes as ISO 8601 UTC, enums as their value)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def row_payload(row: Base) -> dict[str, Any]:
    """Every column of a model row, JSON-ready (the payload format the org server expects)."""
    mapper = inspect(row).mapper
    return {attr.key: jsonable(getattr(row, attr.key)) for attr in mapper.column_attrs}


async def next_version(s: AsyncSession) -> int:
    counter = await s.get(SyncState, VERSION_COUNTER)
    if counter is None:
        counter = SyncState(name=VERSION_COUNTER, value={"n": 0})
        s.add(counter)
    n = int(counter.value.get("n", 0)) + 1
    counter.value = {"n": n}
    return n


async def enqueue(
    s: AsyncSession, org_id: str, entity: str, entity_id: str, payload: dict[str, Any]
) -> int:
    """Record (or replace) the newest state of one object for the org server. Call inside
    the write transaction that made the change. `entity` is the table name (`results`,
    `sessions`, `attendance`, `devices`, ...); `payload` usually `row_payload(row)`.
    Returns the version given to this state."""
    version = await next_version(s)
    row = (
        await s.execute(
            select(OutboxEntry).where(
                OutboxEntry.entity == entity, OutboxEntry.entity_id == entity_id
            )
        )
    ).scalar_one_or_none()
    if row is None:
        s.add(
            OutboxEntry(
                org_id=org_id, entity=entity, entity_id=entity_id, version=version, payload=payload
            )
        )
    else:
        row.org_id = org_id
        row.version = version
        row.payload = payload
    return version


async def enqueue_row(s: AsyncSession, row: Base) -> int:
    """Enqueue a tenant row under its own table name and org (flushes so ids and defaults
    are filled in first)."""
    await s.flush()
    payload = row_payload(row)
    return await enqueue(s, str(payload["org_id"]), row.__tablename__, str(payload["id"]), payload)
