"""Interaction events: store a batch exactly once and advance each stream's durable head.

The one batch writer (live/ingest.py) calls `EventLog.store` inside one write transaction of the
hot write lane (`Database.write_raw`: plain sqlite3 on the writer thread, no ORM per event).
An event whose (device, stream, seq) is already stored is skipped before the INSERT (the
unique key backs this up), so results derived from events count each event once. A stream's
head (`EventStream.acked_seq`, the `event_ack` M) is the highest seq up to which every seq
of the stream is stored; seqs above a gap are stored but acknowledged only once the gap fills.
The new heads are kept in memory only after the transaction committed (`EventLog.committed`).
"""

from __future__ import annotations

import functools
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain
from typing import Any, Final

import msgspec
from msgspec.structs import astuple
from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain import results
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import BoxIdentity, InteractionEvent, OutboxEntry
from vrlms_edge.store.raw import execute_rows, row_chunks

# A seq this far beyond the stream's head is refused: it bounds the gap bookkeeping per
# stream (a headset numbers its events 1, 2, 3... and never runs this far ahead of its acks).
MAX_SEQ_AHEAD: Final = 100_000
# Stream heads kept in memory (a stream is one app start of one headset: a busy box sees a
# few thousand a day); an evicted head is read back from the database when its stream returns.
HEAD_CACHE_SIZE: Final = 20_000
# Streams per head lookup statement (two variables each; SQLite allows 32766).
HEAD_CHUNK: Final = 500

StreamKey = tuple[str, str]  # (devices.id, stream)

# One event row: the id (time-ordered: ?1 the batch's common prefix, ?2 + k the counter of
# row k, formatted by SQLite), the batch's time stamp (?3), then the NewEvent's fields in order.
_INSERT_HEAD: Final = (
    "INSERT INTO interaction_events (id, created_at, updated_at, org_id, device_id, user_id,"
    " session_id, lesson_id, stream, seq, kind, t_ms, received_ms, data) VALUES "
)
_INSERT_TAIL: Final = " ON CONFLICT (device_id, stream, seq) DO NOTHING"
_ROW: Final = "(?1 || printf('%012x', ?2 + {k}), ?3, ?3, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@functools.cache
def _insert_sql(count: int) -> str:
    return _INSERT_HEAD + ", ".join(_ROW.format(k=k) for k in range(count)) + _INSERT_TAIL


def insert_rows(conn: sqlite3.Connection, events: list[NewEvent], stamp: str, now_ms: int) -> None:
    """INSERT the events (resends already stored are skipped by the unique key) in a few
    multi-row statements (store/raw.py row_chunks). Each row's values are its NewEvent's
    fields as they are (`astuple`, no per-value Python), plus three per-statement values."""
    prefix, low = time_ordered_id_base(now_ms, len(events))
    for at, size in row_chunks(len(events)):
        params: list[Any] = [prefix, low + at, stamp]
        params.extend(chain.from_iterable(map(astuple, events[at : at + size])))
        conn.execute(_insert_sql(size), params)


_HEAD_INSERT: Final = (
    "INSERT INTO event_streams (device_id, stream, org_id, acked_seq, updated_at) VALUES "
)
_HEAD_UPDATE: Final = (
    " ON CONFLICT (device_id, stream)"
    " DO UPDATE SET acked_seq = excluded.acked_seq, updated_at = excluded.updated_at"
)


class NewEvent(msgspec.Struct, kw_only=True, gc=False):
    """One event as received, before it is stored (`data` is the JSON object's text).

    The fields are in the order of their columns in `insert_rows`. A msgspec Struct: made in C
    (one per event on the event loop), not tracked by the garbage collector (it holds only
    strings and numbers) while it waits in the queue."""

    org_id: str
    device_pk: str
    user_id: str | None
    session_id: str | None = None
    lesson_id: str | None
    stream: str
    seq: int
    kind: str
    t_ms: int
    received_ms: int
    data: str

    @property
    def key(self) -> StreamKey:
        return (self.device_pk, self.stream)


@dataclass(slots=True)
class StreamHead:
    acked: int
    # Stored seqs above `acked` (after a gap); usually empty.
    above: set[int] = field(default_factory=set)

    def copy(self) -> StreamHead:
        return StreamHead(self.acked, set(self.above))

    def add(self, seq: int) -> None:
        if seq == self.acked + 1:
            self.acked = seq
            while self.acked + 1 in self.above:
                self.acked += 1
                self.above.discard(self.acked)
        else:
            self.above.add(seq)


@dataclass(slots=True)
class Stored:
    """What one batch did: the heads after it, the events newly stored, those refused."""

    heads: dict[StreamKey, StreamHead]
    fresh: list[NewEvent]
    refused: list[NewEvent]
    changes: list[results.ResultChange]


def time_ordered_id_base(now_ms: int, count: int) -> tuple[str, int]:
    """UUIDv7-style ids (millisecond time first, then random) for `count` rows: id k is
    `prefix + f"{low + k:012x}"`. New rows land at the end of the primary-key index instead
    of at random places, which doubles SQLite's insert rate."""
    rand_a = secrets.randbits(12)
    # The random low 62 bits count up from a start low enough that a batch never carries
    # into the upper 14: only the last group of digits differs between the batch's ids.
    rand_b = secrets.randbits(62) & ~((1 << 48) - 1) | secrets.randbelow((1 << 48) - count)
    prefix = (
        f"{(now_ms >> 16) & 0xFFFFFFFF:08x}-{now_ms & 0xFFFF:04x}-7{rand_a:03x}-"
        f"{0x8000 | (rand_b >> 48):04x}-"
    )
    return prefix, rand_b & ((1 << 48) - 1)


class EventLog:
    """The stream heads and the batch store. One instance, used only by the batch writer."""

    def __init__(self) -> None:
        self._heads: OrderedDict[StreamKey, StreamHead] = OrderedDict()
        self.sessions = results.SessionFinder()
        self.attendance = results.AttendanceBook()

    def head(self, key: StreamKey) -> int | None:
        """The cached durable head of a stream (None when not in memory)."""
        found = self._heads.get(key)
        return None if found is None else found.acked

    def _load_heads(
        self, conn: sqlite3.Connection, keys: list[StreamKey]
    ) -> dict[StreamKey, StreamHead]:
        """Heads of streams not in memory, read in two statements per chunk of streams."""
        heads = {key: StreamHead(0) for key in keys}
        for i in range(0, len(keys), HEAD_CHUNK):
            chunk = keys[i : i + HEAD_CHUNK]
            wanted = ", ".join(["(?, ?)"] * len(chunk))
            params = [part for key in chunk for part in key]
            # Joined from the list of keys, so each stream is an index search (a row-value
            # IN list made SQLite scan the whole event table once per new stream).
            keyed = f"WITH k(d, s) AS (VALUES {wanted}) "
            for device, stream, seq in conn.execute(
                keyed + "SELECT h.device_id, h.stream, h.acked_seq FROM k"
                " JOIN event_streams h ON h.device_id = k.d AND h.stream = k.s",
                params,
            ):
                heads[(device, stream)].acked = seq
            for device, stream, seq in conn.execute(
                keyed + "SELECT e.device_id, e.stream, e.seq FROM k"
                " JOIN interaction_events e ON e.device_id = k.d AND e.stream = k.s"
                " LEFT JOIN event_streams h ON h.device_id = k.d AND h.stream = k.s"
                " WHERE e.seq > coalesce(h.acked_seq, 0) ORDER BY e.seq",
                params,
            ):
                heads[(device, stream)].add(seq)
        return heads

    def store(
        self, conn: sqlite3.Connection, events: list[NewEvent], now: datetime, now_ms: int
    ) -> Stored:
        """Store the events not stored yet, advance heads, derive results; all inside the
        caller's write transaction on the hot write lane (`Database.write_raw`, on the
        writer thread). Nothing the event loop reads changes until `committed`."""
        heads: dict[StreamKey, StreamHead] = {}
        orgs: dict[StreamKey, str] = {}
        fresh: list[NewEvent] = []
        refused: list[NewEvent] = []
        missing: list[StreamKey] = []
        cache = self._heads
        for event in events:
            key = (event.device_pk, event.stream)
            if key not in orgs:
                orgs[key] = event.org_id
                cached = cache.get(key)
                if cached is not None:
                    heads[key] = cached.copy()
                else:
                    missing.append(key)
        if missing:
            heads.update(self._load_heads(conn, missing))
        for event in events:
            head = heads[(event.device_pk, event.stream)]
            seq = event.seq
            if seq <= head.acked or seq in head.above:
                continue  # stored before (a resend): acknowledged, not stored again
            if seq > head.acked + MAX_SEQ_AHEAD:
                refused.append(event)
                continue
            if seq == head.acked + 1 and not head.above:
                head.acked = seq  # the usual case, inlined: the next seq of a gapless stream
            else:
                head.add(seq)
            fresh.append(event)
        changes: list[results.ResultChange] = []
        stamp = results.sql_time(now)
        if fresh:
            self.sessions.attribute(conn, fresh, now_ms)
            insert_rows(conn, fresh, stamp, now_ms)
            changes = results.apply_events(conn, fresh, now, self.attendance)
        moved = [
            (key[0], key[1], orgs[key], head.acked, stamp)
            for key, head in heads.items()
            if head.acked != self._cached_acked(key)
        ]
        execute_rows(conn, _HEAD_INSERT, "(?, ?, ?, ?, ?)", _HEAD_UPDATE, moved)
        return Stored(heads=heads, fresh=fresh, refused=refused, changes=changes)

    def _cached_acked(self, key: StreamKey) -> int | None:
        cached = self._heads.get(key)
        return None if cached is None else cached.acked

    def committed(self, stored: Stored) -> None:
        """The batch's transaction committed: its heads are now the truth."""
        for key, head in stored.heads.items():
            self._heads[key] = head
            self._heads.move_to_end(key)
        while len(self._heads) > HEAD_CACHE_SIZE:
            self._heads.popitem(last=False)
        self.sessions.committed()
        self.attendance.committed()

    def rolled_back(self) -> None:
        self.sessions.rolled_back()
        self.attendance.rolled_back()


# --- export and retention ----------------------------------------------------------------------


class ExportedEvent(results.Row):
    """One raw event as exported (one NDJSON line)."""

    id: str
    device_id: str
    user_id: str | None
    session_id: str | None
    lesson_id: str | None
    stream: str
    seq: int
    kind: str
    t_ms: int
    received_ms: int
    data: dict[str, Any]


# Rows fetched per round trip while streaming an export.
EXPORT_PAGE: Final = 2000


async def export_events(
    db: Database,
    scope: results.Scope,
    *,
    session_id: str | None,
    device_pk: str | None,
    since_ms: int | None,
) -> AsyncIterator[list[ExportedEvent]]:
    """Raw events in the caller's scope, in pages ordered by (received_ms, id)."""
    cursor: tuple[int, str] | None = None
    while True:
        async with db.read() as s:
            query = select(InteractionEvent).where(InteractionEvent.org_id == scope.org_id)
            query = scope.restrict_events(query)
            if session_id is not None:
                query = query.where(InteractionEvent.session_id == session_id)
            if device_pk is not None:
                query = query.where(InteractionEvent.device_id == device_pk)
            if since_ms is not None:
                query = query.where(InteractionEvent.received_ms >= since_ms)
            if cursor is not None:
                query = query.where(
                    (InteractionEvent.received_ms > cursor[0])
                    | and_(
                        InteractionEvent.received_ms == cursor[0], InteractionEvent.id > cursor[1]
                    )
                )
            query = query.order_by(InteractionEvent.received_ms, InteractionEvent.id).limit(
                EXPORT_PAGE
            )
            rows = list((await s.execute(query)).scalars())
        if not rows:
            return
        yield [
            ExportedEvent(
                id=r.id,
                device_id=r.device_id,
                user_id=r.user_id,
                session_id=r.session_id,
                lesson_id=r.lesson_id,
                stream=r.stream,
                seq=r.seq,
                kind=r.kind,
                t_ms=r.t_ms,
                received_ms=r.received_ms,
                data=r.data,
            )
            for r in rows
        ]
        if len(rows) < EXPORT_PAGE:
            return
        cursor = (rows[-1].received_ms, rows[-1].id)


# Events deleted per retention slice: short transactions so ingest never waits long.
PRUNE_SLICE: Final = 2000


async def prunable_before_ms(s: AsyncSession, now_ms: int, retention_days: int) -> int:
    """Events received before this server time may be deleted. Raw events never leave the box;
    their summaries (results, attendance) do. On a box enrolled with an org server a change
    whose outbox entry is still pending was made by an event received no earlier than that
    entry's creation, so the cutoff stops at the oldest pending entry: summaries are kept."""
    cutoff = now_ms - int(timedelta(days=retention_days).total_seconds() * 1000)
    enrolled = (
        await s.execute(select(exists().where(BoxIdentity.enrolled_at.is_not(None))))
    ).scalar()
    if enrolled:
        oldest = (await s.execute(select(func.min(OutboxEntry.created_at)))).scalar()
        if oldest is not None:
            cutoff = min(cutoff, int(oldest.timestamp() * 1000))
    return cutoff


async def prune_slice(s: AsyncSession, *, before_ms: int) -> int:
    """Delete one slice of raw events received before `before_ms`; returns how many."""
    victims = (
        select(InteractionEvent.id)
        .where(InteractionEvent.received_ms < before_ms)
        .order_by(InteractionEvent.received_ms)
        .limit(PRUNE_SLICE)
        .scalar_subquery()
    )
    result = await s.execute(delete(InteractionEvent).where(InteractionEvent.id.in_(victims)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
