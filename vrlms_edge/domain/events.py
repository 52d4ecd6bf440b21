"""Interaction events: store a batch exactly once and advance each stream's durable head.

The one batch writer (live/ingest.py) calls `EventLog.store` inside one write transaction.
An event whose (device, stream, seq) is already stored is skipped before the INSERT (the
unique key backs this up), so results derived from events count each event once. A stream's
head (`EventStream.acked_seq`, the `event_ack` M) is the highest seq up to which every seq
of the stream is stored; seqs above a gap are stored but acknowledged only once the gap fills.
The new heads are kept in memory only after the transaction committed (`EventLog.committed`).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, delete, exists, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from vrlms_edge.domain import results
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import BoxIdentity, EventStream, InteractionEvent, OutboxEntry

# A seq this far beyond the stream's head is refused: it bounds the gap bookkeeping per
# stream (a headset numbers its events 1, 2, 3... and never runs this far ahead of its acks).
MAX_SEQ_AHEAD: Final = 100_000
# Stream heads kept in memory (a stream is one app start of one headset: a busy box sees a
# few thousand a day); an evicted head is read back from the database when its stream returns.
HEAD_CACHE_SIZE: Final = 20_000

StreamKey = tuple[str, str]  # (devices.id, stream)

_INSERT_SQL: Final = (
    "INSERT INTO interaction_events (id, created_at, updated_at, org_id, device_id, user_id,"
    " session_id, lesson_id, stream, seq, kind, t_ms, received_ms, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, stream, seq) DO NOTHING"
)
_HEAD_SQL: Final = (
    "INSERT INTO event_streams (device_id, stream, org_id, acked_seq, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, stream)"
    " DO UPDATE SET acked_seq = excluded.acked_seq, updated_at = excluded.updated_at"
)


@dataclass(slots=True)
class NewEvent:
    """One event as received, before it is stored (`data` is the JSON object's text)."""

    org_id: str
    device_pk: str
    user_id: str | None
    stream: str
    seq: int
    kind: str
    t_ms: int
    lesson_id: str | None
    data: str
    received_ms: int
    session_id: str | None = None

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


def sqlite_time(when: datetime) -> str:
    """A UTC time as SQLAlchemy stores DateTime on SQLite (for the driver-level INSERT)."""
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def time_ordered_ids(now_ms: int, count: int) -> list[str]:
    """UUIDv7-style ids (millisecond time first, then random): new rows land at the end of the
    primary-key index instead of at random places, which doubles SQLite's insert rate."""
    rand_a = secrets.randbits(12)
    base = secrets.randbits(62)
    head = f"{(now_ms >> 16) & 0xFFFFFFFF:08x}-{now_ms & 0xFFFF:04x}-7{rand_a:03x}-"
    mask = (1 << 62) - 1
    out = []
    for i in range(count):
        rb = (base + i) & mask
        out.append(f"{head}{0x8000 | (rb >> 48):04x}-{rb & 0xFFFFFFFFFFFF:012x}")
    return out


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

    async def _load_heads(
        self, s: AsyncSession, keys: list[StreamKey]
    ) -> dict[StreamKey, StreamHead]:
        """Heads of streams not in memory, read in two statements for the whole batch."""
        wanted = tuple_(EventStream.device_id, EventStream.stream).in_(keys)
        acked = {
            (device, stream): seq
            for device, stream, seq in (
                await s.execute(
                    select(EventStream.device_id, EventStream.stream, EventStream.acked_seq).where(
                        wanted
                    )
                )
            ).tuples()
        }
        heads = {key: StreamHead(acked.get(key, 0)) for key in keys}
        head_of = aliased(EventStream)
        above = await s.execute(
            select(InteractionEvent.device_id, InteractionEvent.stream, InteractionEvent.seq)
            .outerjoin(
                head_of,
                and_(
                    head_of.device_id == InteractionEvent.device_id,
                    head_of.stream == InteractionEvent.stream,
                ),
            )
            .where(
                tuple_(InteractionEvent.device_id, InteractionEvent.stream).in_(keys),
                InteractionEvent.seq > func.coalesce(head_of.acked_seq, 0),
            )
            .order_by(InteractionEvent.seq)
        )
        for device, stream, seq in above.tuples():
            heads[(device, stream)].add(seq)
        return heads

    async def store(
        self, s: AsyncSession, events: list[NewEvent], now: datetime, now_ms: int
    ) -> Stored:
        """Store the events not stored yet, advance heads, derive results; all inside the
        caller's write transaction. Nothing in memory changes until `committed`."""
        heads: dict[StreamKey, StreamHead] = {}
        orgs: dict[StreamKey, str] = {}
        fresh: list[NewEvent] = []
        refused: list[NewEvent] = []
        missing: list[StreamKey] = []
        for event in events:
            key = event.key
            if key not in orgs:
                orgs[key] = event.org_id
                cached = self._heads.get(key)
                if cached is not None:
                    heads[key] = cached.copy()
                else:
                    missing.append(key)
        if missing:
            heads.update(await self._load_heads(s, missing))
        for event in events:
            key = event.key
            head = heads[key]
            seq = event.seq
            if seq <= head.acked or seq in head.above:
                continue  # stored before (a resend): acknowledged, not stored again
            if seq > head.acked + MAX_SEQ_AHEAD:
                refused.append(event)
                continue
            head.add(seq)
            fresh.append(event)
        changes: list[results.ResultChange] = []
        if fresh:
            await self.sessions.attribute(s, fresh, now_ms)
            stamp = sqlite_time(now)
            ids = time_ordered_ids(now_ms, len(fresh))
            rows = [
                (
                    ids[i],
                    stamp,
                    stamp,
                    e.org_id,
                    e.device_pk,
                    e.user_id,
                    e.session_id,
                    e.lesson_id,
                    e.stream,
                    e.seq,
                    e.kind,
                    e.t_ms,
                    e.received_ms,
                    e.data,
                )
                for i, e in enumerate(fresh)
            ]
            conn = await s.connection()
            await conn.exec_driver_sql(_INSERT_SQL, rows)
            changes = await results.apply_events(s, fresh, now, self.attendance)
        moved = [
            (key[0], key[1], orgs[key], head.acked, sqlite_time(now))
            for key, head in heads.items()
            if head.acked != self._cached_acked(key)
        ]
        if moved:
            conn = await s.connection()
            await conn.exec_driver_sql(_HEAD_SQL, moved)
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


def device_keys(events: Iterable[NewEvent]) -> set[StreamKey]:
    return {e.key for e in events}
