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

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any, Final

import msgspec
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.store.models import Base, OutboxEntry, SyncState, utcnow
from vrlms_edge.store.raw import RawTable, column_keys, column_value, execute_rows

# SyncState row holding the last version handed out.
VERSION_COUNTER: Final = "outbox_version"


_AS_IS: Final = frozenset({str, int, float, bool, type(None)})


def jsonable(value: Any) -> Any:
    """A column value as JSON (datetimes as ISO 8601 UTC, enums as their value)."""
    if type(value) in _AS_IS:  # most columns: checked first
        return value
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
    return {key: jsonable(column_value(row, key)) for key in column_keys(type(row))}


def values_payload(table: RawTable[Any], found: Sequence[Any]) -> dict[str, Any]:
    """`row_payload` of a row as sqlite3 gives it (`RawTable.values`), with no model object."""
    return {key: jsonable(value) for key, value in table.values(found).items()}


async def next_versions(s: AsyncSession, count: int) -> int:
    """Reserve `count` versions; returns the first."""
    counter = await s.get(SyncState, VERSION_COUNTER)
    if counter is None:
        counter = SyncState(name=VERSION_COUNTER, value={"n": 0})
        s.add(counter)
    first = int(counter.value.get("n", 0)) + 1
    counter.value = {"n": first + count - 1}
    return first


Item = tuple[str, str, str, dict[str, Any]]  # (org_id, entity, entity_id, payload)
_CONFLICT: Final = ("entity", "entity_id")
_REPLACED: Final = ("org_id", "version", "payload", "updated_at")


Newest = dict[tuple[str, str], tuple[str, dict[str, Any]]]


def _newest(items: list[Item]) -> Newest:
    """(entity, entity_id) -> (org_id, payload); a later state of one object wins."""
    return {(entity, entity_id): (org_id, payload) for org_id, entity, entity_id, payload in items}


# An outbox row's columns, in the order _outbox_rows gives them.
_ROW_COLUMNS: Final = (
    "org_id",
    "entity",
    "entity_id",
    "version",
    "payload",
    "created_at",
    "updated_at",
)


def _outbox_rows(
    newest: Newest, first_version: int, stamp: Any, payload_as: Callable[[Any], Any]
) -> list[tuple[Any, ...]]:
    """One row per object (_ROW_COLUMNS), versions from `first_version` on, created and
    updated at `stamp`, the payload as `payload_as` gives it."""
    return [
        (org_id, entity, entity_id, first_version + i, payload_as(payload), stamp, stamp)
        for i, ((entity, entity_id), (org_id, payload)) in enumerate(newest.items())
    ]


async def enqueue_many(s: AsyncSession, items: list[Item]) -> int:
    """Record the newest state of many objects at once. One statement per chunk: this is
    what a batch writer should call. Returns the number of objects queued."""
    newest = _newest(items)
    if not newest:
        return 0
    first = await next_versions(s, len(newest))
    rows = [
        dict(zip(_ROW_COLUMNS, row, strict=True))
        for row in _outbox_rows(newest, first, utcnow(), lambda payload: payload)
    ]
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    table: Any = OutboxEntry.__table__
    stmt = dialect.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in _CONFLICT],
        set_={k: stmt.excluded[k] for k in _REPLACED},
    )
    # One compiled statement for all rows (executemany).
    await (await s.connection()).execute(stmt, rows)
    return len(rows)


_OUTBOX: Final = RawTable(OutboxEntry)
# `next_versions` in one statement: creates the counter or advances it by the second parameter,
# and answers the last version reserved.
_ADVANCE_COUNTER_SQL: Final = (
    "INSERT INTO sync_state (name, value, updated_at) VALUES (?, json_object('n', ?), ?)"
    " ON CONFLICT (name) DO UPDATE SET"
    " value = json_object('n', coalesce(json_extract(sync_state.value, '$.n'), 0)"
    " + json_extract(excluded.value, '$.n')),"
    " updated_at = excluded.updated_at"
    " RETURNING json_extract(value, '$.n')"
)


_RAW_UPSERT: Final = (
    f"INSERT INTO sync_outbox ({', '.join(_ROW_COLUMNS)}) VALUES ",
    "(" + ", ".join("?" for _ in _ROW_COLUMNS) + ")",
    f" ON CONFLICT ({', '.join(_CONFLICT)}) DO UPDATE SET "
    + ", ".join(f"{k} = excluded.{k}" for k in _REPLACED),
)


def enqueue_raw(conn: sqlite3.Connection, items: list[Item]) -> int:
    """`enqueue_many` inside a transaction of the hot write lane (store/raw.py). Every teacher
    command comes through here: the rows are bound by hand (one time stamp, the payload as
    msgspec's JSON text) rather than value by value through the model's processors."""
    newest = _newest(items)
    if not newest:
        return 0
    stamp = _OUTBOX.bind("updated_at", utcnow())
    (last,) = conn.execute(_ADVANCE_COUNTER_SQL, (VERSION_COUNTER, len(newest), stamp)).fetchone()
    rows = _outbox_rows(newest, int(last) - len(newest) + 1, stamp, _json_text)
    execute_rows(conn, *_RAW_UPSERT, rows)
    return len(rows)


def _json_text(payload: dict[str, Any]) -> str:
    # (compact, where the ORM's json.dumps puts spaces: the same JSON to every reader)
    return msgspec.json.encode(payload).decode()


async def enqueue(
    s: AsyncSession, org_id: str, entity: str, entity_id: str, payload: dict[str, Any]
) -> None:
    """Record (or replace) the newest state of one object for the org server. Call inside
    the write transaction that made the change. `entity` is the table name (`results`,
    `sessions`, `attendance`, `devices`, ...); `payload` usually `row_payload(row)`."""
    await enqueue_many(s, [(org_id, entity, entity_id, payload)])


async def enqueue_rows(s: AsyncSession, rows: Sequence[Base]) -> int:
    """Enqueue tenant rows under their own table names and orgs (flushes once first so ids
    and defaults are filled in)."""
    await s.flush()
    items = []
    for row in rows:
        payload = row_payload(row)
        items.append((str(payload["org_id"]), row.__tablename__, str(payload["id"]), payload))
    return await enqueue_many(s, items)


async def enqueue_row(s: AsyncSession, row: Base) -> None:
    await enqueue_rows(s, [row])
