"""Event summaries: what a student's raw interaction events in one session (and lesson) add
up to, kept on the box and queued for the org server. Raw events never leave the box; these
rows do.

One summary per (session, student, lesson): events per kind (gaze, click, action, progress,
result, the rest), the first and last event time (`t_ms`), and `data.progress` / `data.score`
of the newest progress / result event that carried a number (with that event's `t_ms`). Its
id is a UUIDv5 of that key, so summarising again updates the same row on the box and on the
org server.

`summarise_events` runs at the start of every sync run (worker and `vrlms-edge sync now`).
It counts each event once, by a watermark in SyncState: SQLite's rowid of the newest event
counted (and that event's id). A new row takes max(rowid) + 1, so while the watermark's row
exists every event stored later has a higher rowid:

- the events after the watermark are counted in slices of rowids: one GROUP BY (plus one
  ranked query for the newest progress and score) over the slice in a read snapshot, so
  ingest goes on meanwhile; then one short write transaction adds the slice's counts to the
  stored summaries, queues the changed rows (`outbox.enqueue_rows`) and moves the watermark
  to the slice's end, all together: a slice is counted exactly once even if the process dies.
  Summaries only grow: pruning old raw events does not lower them.
- if the watermark's row is gone (retention or a removed headset deleted the newest events),
  rowids may repeat: the sessions with events received since shortly before the last run are
  then recomputed from all their events still on the box (up to the newest event, where the
  watermark restarts).

With no new events nothing is read beyond two index lookups and nothing changes. Events
outside a session, or without a student, are not summarised (results cover them). The box
stores events in SQLite only (the batch writer's SQL is SQLite's), so this does too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, case, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    EventSummary,
    InteractionEvent,
    Lesson,
    Session,
    SyncState,
    User,
)
from vrlms_edge.sync.outbox import enqueue_rows

# SyncState row holding the watermark {"rowid", "id", "at_ms"}.
WATERMARK_KEY: Final = "event_summaries"
# Fixed namespace of summary ids (UUIDv5 over "session/user/lesson"): never change it, or
# every summary would get a second row on the org server.
ID_NAMESPACE: Final = uuid.UUID("2cfa58b8-1266-4f76-bb85-cd86b4cd12ba")
# Events counted per slice (one read snapshot, then one write transaction): ~0.2 s of
# counting, so a first run over months of events goes in steps, each committed.
SLICE_EVENTS: Final = 20_000
# Sessions recomputed per slice after the watermark's row was deleted (a class session holds
# ~10^4..10^5 events).
SESSIONS_PER_SLICE: Final = 20
# After the watermark's row was deleted, events received this long before the last run are
# looked at again (covers the time between reading the watermark and storing the new one).
RESCAN_SLACK_MS: Final = 10 * 60_000

# Kinds counted in a column of their own; any other kind counts as `other_events`.
KIND_COLUMNS: Final = {
    "gaze": "gaze",
    "click": "clicks",
    "action": "actions",
    "progress": "progress_events",
    "result": "result_events",
}
COUNT_COLUMNS: Final = ("events", *KIND_COLUMNS.values(), "other_events")
SUMMARY_COLUMNS: Final = (
    *COUNT_COLUMNS,
    "first_event_ms",
    "last_event_ms",
    "last_progress",
    "last_progress_ms",
    "last_score",
    "last_score_ms",
)


def event_rowid() -> ColumnElement[int]:
    """SQLite's rowid of interaction_events: grows with every stored event."""
    return literal_column("interaction_events.rowid")


GroupKey = tuple[str, str, str, str | None]  # (org_id, session_id, user_id, lesson_id)
Stamped = tuple[int, float]  # (t_ms, value) of the newest event carrying the value


@dataclass
class SummaryReport:
    """What one `summarise_events` call did."""

    # Events counted (0 after a rescan, which recomputes whole sessions instead).
    events: int = 0
    # Summaries created or changed (each queued for the org server).
    changed: int = 0
    changed_ids: set[str] = field(default_factory=set)
    # True when the watermark's row was gone and recent sessions were recomputed.
    rescanned: bool = False


def summary_id(session_id: str, user_id: str, lesson_id: str | None) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{session_id}/{user_id}/{lesson_id or ''}"))


@dataclass
class Tally:
    """One summary's numbers while they are added up."""

    counts: dict[str, int]
    first_ms: int
    last_ms: int
    progress: Stamped | None = None
    score: Stamped | None = None

    def add(self, later: Tally) -> None:
        """Add the numbers of events stored after these (on equal t_ms, theirs win)."""
        for column, n in later.counts.items():
            self.counts[column] += n
        self.first_ms = min(self.first_ms, later.first_ms)
        self.last_ms = max(self.last_ms, later.last_ms)
        self.progress = _newer(self.progress, later.progress)
        self.score = _newer(self.score, later.score)

    @classmethod
    def of(cls, row: EventSummary) -> Tally:
        def stamped(value: float | None, t_ms: int | None) -> Stamped | None:
            return None if value is None or t_ms is None else (t_ms, value)

        return cls(
            counts={c: int(getattr(row, c)) for c in COUNT_COLUMNS},
            first_ms=row.first_event_ms,
            last_ms=row.last_event_ms,
            progress=stamped(row.last_progress, row.last_progress_ms),
            score=stamped(row.last_score, row.last_score_ms),
        )

    def values(self) -> dict[str, Any]:
        return {
            **self.counts,
            "first_event_ms": self.first_ms,
            "last_event_ms": self.last_ms,
            "last_progress": self.progress[1] if self.progress else None,
            "last_progress_ms": self.progress[0] if self.progress else None,
            "last_score": self.score[1] if self.score else None,
            "last_score_ms": self.score[0] if self.score else None,
        }


def _newer(a: Stamped | None, b: Stamped | None) -> Stamped | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b[0] >= a[0] else a


# --- counting ----------------------------------------------------------------------------------


async def count_events(s: AsyncSession, where: ColumnElement[bool]) -> dict[GroupKey, Tally]:
    """The events matching `where` (in sessions, with a student), counted per summary: one
    GROUP BY, plus one ranked query for the newest numeric progress and score. Events naming a
    lesson this box does not know count under lesson null; groups whose session or student is
    not on the box are left out."""
    e = InteractionEvent
    where = and_(where, e.session_id.is_not(None), e.user_id.is_not(None))
    kind_sums = [
        func.sum(case((e.kind == kind, 1), else_=0)).label(column)
        for kind, column in KIND_COLUMNS.items()
    ]
    rows = await s.execute(
        select(
            e.org_id,
            e.session_id,
            e.user_id,
            e.lesson_id,
            func.count().label("events"),
            *kind_sums,
            func.min(e.t_ms),
            func.max(e.t_ms),
        )
        .where(where)
        .group_by(e.org_id, e.session_id, e.user_id, e.lesson_id)
    )
    raw: dict[GroupKey, Tally] = {}
    for org_id, session_id, user_id, lesson_id, total, *rest in rows:
        kinds = [int(n or 0) for n in rest[: len(KIND_COLUMNS)]]
        counts = {"events": int(total), **dict(zip(KIND_COLUMNS.values(), kinds, strict=True))}
        counts["other_events"] = int(total) - sum(kinds)
        first_ms, last_ms = rest[len(KIND_COLUMNS) :]
        raw[(org_id, session_id, user_id, lesson_id)] = Tally(
            counts=counts, first_ms=int(first_ms), last_ms=int(last_ms)
        )
    if not raw:
        return {}
    value = case(
        (e.kind == "progress", func.json_extract(e.data, "$.progress")),
        else_=func.json_extract(e.data, "$.score"),
    )
    numeric = ("integer", "real")
    rank = (
        func.row_number()
        .over(
            partition_by=(e.org_id, e.session_id, e.user_id, e.lesson_id, e.kind),
            order_by=(e.t_ms.desc(), event_rowid().desc()),
        )
        .label("rank")
    )
    ranked = (
        select(
            e.org_id, e.session_id, e.user_id, e.lesson_id, e.kind, e.t_ms, value.label("v"), rank
        )
        .where(
            where,
            or_(
                and_(e.kind == "progress", func.json_type(e.data, "$.progress").in_(numeric)),
                and_(e.kind == "result", func.json_type(e.data, "$.score").in_(numeric)),
            ),
        )
        .subquery()
    )
    for org_id, session_id, user_id, lesson_id, kind, t_ms, v, _ in await s.execute(
        select(ranked).where(ranked.c.rank == 1)
    ):
        tally = raw.get((org_id, session_id, user_id, lesson_id))
        if tally is None:
            continue
        if kind == "progress":
            tally.progress = (int(t_ms), min(1.0, max(0.0, float(v))))
        else:
            tally.score = (int(t_ms), float(v))
    return await _resolve(s, raw)


async def _known(
    s: AsyncSession, model: type[Lesson] | type[User] | type[Session], ids: set[str]
) -> set[tuple[str, str]]:
    """(org_id, id) of the rows of `model` among `ids`."""
    if not ids:
        return set()
    found = await s.execute(select(model.org_id, model.id).where(model.id.in_(ids)))
    return {(org_id, row_id) for org_id, row_id in found.all()}


async def _resolve(s: AsyncSession, raw: dict[GroupKey, Tally]) -> dict[GroupKey, Tally]:
    lessons = await _known(s, Lesson, {k[3] for k in raw if k[3] is not None})
    users = await _known(s, User, {k[2] for k in raw})
    sessions = await _known(s, Session, {k[1] for k in raw})
    merged: dict[GroupKey, Tally] = {}
    for (org_id, session_id, user_id, lesson_id), tally in sorted(
        raw.items(), key=lambda kv: tuple(x or "" for x in kv[0])
    ):
        if (org_id, session_id) not in sessions or (org_id, user_id) not in users:
            continue
        if lesson_id is not None and (org_id, lesson_id) not in lessons:
            lesson_id = None
        key = (org_id, session_id, user_id, lesson_id)
        if key in merged:
            merged[key].add(tally)
        else:
            merged[key] = tally
    return merged


# --- storing -----------------------------------------------------------------------------------


async def store_tallies(
    s: AsyncSession, tallies: dict[GroupKey, Tally], now: datetime, *, replace: bool
) -> list[str]:
    """Add the tallies to the stored summaries (`replace`: they are whole, not additions) and
    queue the rows that changed, inside the caller's write transaction. Returns their ids."""
    if not tallies:
        return []
    ids = {summary_id(k[1], k[2], k[3]): k for k in tallies}
    stored = {
        row.id: row
        for row in (
            await s.execute(select(EventSummary).where(EventSummary.id.in_(list(ids))))
        ).scalars()
    }
    changed: list[EventSummary] = []
    for row_id, key in ids.items():
        row = stored.get(row_id)
        tally = tallies[key]
        if row is None:
            org_id, session_id, user_id, lesson_id = key
            row = EventSummary(
                id=row_id,
                org_id=org_id,
                session_id=session_id,
                user_id=user_id,
                lesson_id=lesson_id,
                created_at=now,
                updated_at=now,
                **tally.values(),
            )
            s.add(row)
            changed.append(row)
            continue
        if not replace:
            whole = Tally.of(row)
            whole.add(tally)
            tally = whole
        values = tally.values()
        if any(getattr(row, c) != values[c] for c in SUMMARY_COLUMNS) or row.deleted_at:
            for column in SUMMARY_COLUMNS:
                setattr(row, column, values[column])
            row.deleted_at = None
            row.updated_at = now
            changed.append(row)
    if changed:
        await enqueue_rows(s, list(changed))
    return [row.id for row in changed]


async def _move_watermark(s: AsyncSession, expected: int, mark: dict[str, Any]) -> bool:
    """Store the new watermark if the stored one is still `expected` (one summariser at a
    time: the sync lease; this check keeps a stray second one from counting twice)."""
    state = await s.get(SyncState, WATERMARK_KEY)
    current = int(state.value.get("rowid", 0)) if state is not None else 0
    if current != expected:
        return False
    if state is None:
        s.add(SyncState(name=WATERMARK_KEY, value=mark))
    else:
        state.value = mark
    return True


# --- the pass ----------------------------------------------------------------------------------


async def summarise_events(
    db: Database, now: datetime, now_ms: int, *, slice_events: int = SLICE_EVENTS
) -> SummaryReport:
    """Count the events stored since the last call into the summaries and queue the changed
    ones for the org server (see the module docstring)."""
    report = SummaryReport()
    rowid = event_rowid()
    async with db.read() as s:
        state = await s.get(SyncState, WATERMARK_KEY)
        mark = dict(state.value) if state is not None else {}
        after = int(mark.get("rowid", 0))
        newest = (
            await s.execute(select(rowid, InteractionEvent.id).order_by(rowid.desc()).limit(1))
        ).first()
        if newest is None:
            return report  # no events at all
        intact = after == 0 or await _names(s, after, mark.get("id"))
        if intact and int(newest[0]) == after:
            return report  # nothing after the watermark
    if not intact:
        report.rescanned = True
        report.changed_ids = await _rescan(db, mark, now, now_ms)
        report.changed = len(report.changed_ids)
        return report
    while True:
        async with db.read() as s:
            end = (
                await s.execute(
                    select(rowid, InteractionEvent.id)
                    .where(rowid > after)
                    .order_by(rowid)
                    .offset(slice_events - 1)
                    .limit(1)
                )
            ).first() or (
                await s.execute(select(rowid, InteractionEvent.id).order_by(rowid.desc()).limit(1))
            ).first()
            if end is None or int(end[0]) <= after:
                return report
            upto = int(end[0])
            in_slice = and_(rowid > after, rowid <= upto)
            tallies = await count_events(s, in_slice)
            counted = (
                await s.execute(select(func.count()).select_from(InteractionEvent).where(in_slice))
            ).scalar_one()
        new_mark = {"rowid": upto, "id": str(end[1]), "at_ms": now_ms}
        async with db.write() as s:
            if not await _move_watermark(s, after, new_mark):
                return report
            report.changed_ids.update(await store_tallies(s, tallies, now, replace=False))
        report.changed = len(report.changed_ids)
        report.events += int(counted)
        after = upto


async def _names(s: AsyncSession, rowid: int, event_id: Any) -> bool:
    """Whether the event at `rowid` is still the one the watermark names."""
    found = await s.execute(select(InteractionEvent.id).where(event_rowid() == rowid))
    return bool(found.scalar() == event_id)


async def _rescan(db: Database, mark: dict[str, Any], now: datetime, now_ms: int) -> set[str]:
    """The watermark's row is gone: recompute the sessions with events received since shortly
    before the last run (or stored after the old watermark) from all their events, then
    restart the watermark at the newest event."""
    rowid = event_rowid()
    async with db.read() as s:
        newest = (
            await s.execute(select(rowid, InteractionEvent.id).order_by(rowid.desc()).limit(1))
        ).first()
        since = int(mark.get("at_ms", 0)) - RESCAN_SLACK_MS
        found = await s.execute(
            select(InteractionEvent.session_id)
            .where(
                or_(rowid > int(mark.get("rowid", 0)), InteractionEvent.received_ms >= since),
                InteractionEvent.session_id.is_not(None),
            )
            .distinct()
        )
        sessions = sorted(str(x) for x in found.scalars())
    expected = int(mark.get("rowid", 0))
    if newest is None:
        return set()
    top = int(newest[0])
    new_mark = {"rowid": top, "id": str(newest[1]), "at_ms": now_ms}
    changed: set[str] = set()
    slices = [
        sessions[i : i + SESSIONS_PER_SLICE] for i in range(0, len(sessions), SESSIONS_PER_SLICE)
    ] or [[]]
    for n, chunk in enumerate(slices):
        # Whole sessions are counted again (replace), so a slice done twice does no harm.
        async with db.read() as s:
            # Up to the new watermark only: later events are counted by the next pass.
            upto = and_(InteractionEvent.session_id.in_(chunk), rowid <= top)
            tallies = await count_events(s, upto) if chunk else {}
        async with db.write() as s:
            changed.update(await store_tallies(s, tallies, now, replace=True))
            if n == len(slices) - 1:
                await _move_watermark(s, expected, new_mark)
    return changed
