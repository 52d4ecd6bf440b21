"""Event summaries: what a student's raw interaction events in one session (and lesson) add
up to, kept on the box and queued for the org server. Raw events never leave the box; these
rows do.

One summary per (session, student, lesson): events per kind (gaze, click, action, progress,
result, the rest), the first and last event time (`t_ms`), and `data.progress` / `data.score`
of the newest progress / result event that carried a number. Its id is a UUIDv5 of that key,
so summarising again updates the same row on the box and on the org server.

`summarise_events` runs before every sync push (worker and `vrlms-edge sync now`):

- which sessions changed: those with events stored after a watermark, SQLite's rowid of the
  newest event summarised last time. A new row takes max(rowid) + 1, so while the watermark's
  row exists every newer event has a higher rowid; if that row was deleted (retention, a
  removed device), rowids may repeat, and sessions with events received since shortly before
  the last run are taken as changed as well;
- their summaries are recomputed from all their events with one GROUP BY (plus one ranked
  query for the newest progress and score), a slice of sessions per write transaction, and
  only rows whose numbers differ are stored and queued (`outbox.enqueue_rows`) in that same
  transaction, which also moves the watermark. With no new events nothing changes.

Events outside a session, or without a student, are not summarised (results cover them).
The box stores events in SQLite only (the batch writer's SQL is SQLite's), so this does too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
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
# Sessions recomputed per write transaction: a class session holds ~10^4..10^5 events, so a
# slice stays a short transaction and ingest never waits long on the write lock.
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
    "last_score",
)


def event_rowid() -> ColumnElement[int]:
    """SQLite's rowid of interaction_events: grows with every stored event."""
    return literal_column("interaction_events.rowid")


GroupKey = tuple[str, str, str, str | None]  # (org_id, session_id, user_id, lesson_id)


@dataclass
class SummaryReport:
    """What one `summarise_events` call did."""

    sessions: int = 0
    # Summaries created or changed (each queued for the org server).
    changed: int = 0
    # True when the watermark's row was gone and recent events were looked at again.
    rescanned: bool = False


def summary_id(session_id: str, user_id: str, lesson_id: str | None) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{session_id}/{user_id}/{lesson_id or ''}"))


@dataclass
class _Tally:
    """One summary's numbers while they are added up."""

    counts: dict[str, int]
    first_ms: int
    last_ms: int
    progress: tuple[int, float] | None = None  # (t_ms, value) of the newest
    score: tuple[int, float] | None = None

    def merge(self, other: _Tally) -> None:
        for column, n in other.counts.items():
            self.counts[column] += n
        self.first_ms = min(self.first_ms, other.first_ms)
        self.last_ms = max(self.last_ms, other.last_ms)
        self.progress = _newer(self.progress, other.progress)
        self.score = _newer(self.score, other.score)

    def values(self) -> dict[str, Any]:
        return {
            **self.counts,
            "first_event_ms": self.first_ms,
            "last_event_ms": self.last_ms,
            "last_progress": self.progress[1] if self.progress else None,
            "last_score": self.score[1] if self.score else None,
        }


def _newer(a: tuple[int, float] | None, b: tuple[int, float] | None) -> tuple[int, float] | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b[0] > a[0] else a


# --- which sessions changed --------------------------------------------------------------------


async def _changed_sessions(
    db: Database, now_ms: int
) -> tuple[list[str], dict[str, Any] | None, bool]:
    """(sessions to recompute, the watermark to store afterwards or None to keep the stored
    one, whether the stored watermark's row was gone). One read snapshot, so every event the
    new watermark covers is seen here."""
    async with db.read() as s:
        state = await s.get(SyncState, WATERMARK_KEY)
        mark = dict(state.value) if state is not None else {}
        rowid = int(mark.get("rowid", 0))
        last = event_rowid()
        newest = (
            await s.execute(select(last, InteractionEvent.id).order_by(last.desc()).limit(1))
        ).first()
        if newest is None:
            return [], None, False  # no events at all: nothing to do, keep the watermark
        intact = rowid == 0 or (
            (await s.execute(select(InteractionEvent.id).where(event_rowid() == rowid))).scalar()
            == mark.get("id")
        )
        if intact and int(newest[0]) == rowid:
            return [], None, False
        after: ColumnElement[bool] = event_rowid() > rowid
        if not intact:
            since = int(mark.get("at_ms", 0)) - RESCAN_SLACK_MS
            after = or_(after, InteractionEvent.received_ms >= since)
        found = await s.execute(
            select(InteractionEvent.session_id)
            .where(
                after,
                InteractionEvent.session_id.is_not(None),
                InteractionEvent.user_id.is_not(None),
            )
            .distinct()
        )
        sessions = sorted(str(x) for x in found.scalars())
    new_mark = {"rowid": int(newest[0]), "id": str(newest[1]), "at_ms": now_ms}
    return sessions, new_mark, not intact


# --- recomputing -------------------------------------------------------------------------------


async def _tallies(s: AsyncSession, session_ids: list[str]) -> dict[GroupKey, _Tally]:
    """Every (org, session, user, raw lesson id) group of the sessions' events, counted."""
    e = InteractionEvent
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
        .where(e.session_id.in_(session_ids), e.user_id.is_not(None))
        .group_by(e.org_id, e.session_id, e.user_id, e.lesson_id)
    )
    tallies: dict[GroupKey, _Tally] = {}
    for org_id, session_id, user_id, lesson_id, total, *rest in rows:
        kinds = [int(n or 0) for n in rest[: len(KIND_COLUMNS)]]
        counts = {"events": int(total), **dict(zip(KIND_COLUMNS.values(), kinds, strict=True))}
        counts["other_events"] = int(total) - sum(kinds)
        first_ms, last_ms = rest[len(KIND_COLUMNS) :]
        tallies[(org_id, session_id, user_id, lesson_id)] = _Tally(
            counts=counts, first_ms=int(first_ms), last_ms=int(last_ms)
        )
    # The newest numeric data.progress of progress events and data.score of result events.
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
            e.session_id.in_(session_ids),
            e.user_id.is_not(None),
            or_(
                and_(
                    e.kind == "progress",
                    func.json_type(e.data, "$.progress").in_(numeric),
                ),
                and_(e.kind == "result", func.json_type(e.data, "$.score").in_(numeric)),
            ),
        )
        .subquery()
    )
    newest = await s.execute(select(ranked).where(ranked.c.rank == 1))
    for org_id, session_id, user_id, lesson_id, kind, t_ms, v, _ in newest:
        tally = tallies.get((org_id, session_id, user_id, lesson_id))
        if tally is None:
            continue
        if kind == "progress":
            tally.progress = (int(t_ms), min(1.0, max(0.0, float(v))))
        else:
            tally.score = (int(t_ms), float(v))
    return tallies


async def _known(
    s: AsyncSession, model: type[Lesson] | type[User] | type[Session], ids: set[str]
) -> set[tuple[str, str]]:
    """(org_id, id) of the rows of `model` among `ids`."""
    if not ids:
        return set()
    found = await s.execute(select(model.org_id, model.id).where(model.id.in_(ids)))
    return {(org_id, row_id) for org_id, row_id in found.all()}


async def _summaries(s: AsyncSession, session_ids: list[str]) -> dict[str, dict[str, Any]]:
    """summary id -> (org_id, session_id, user_id, lesson_id and the numbers) of the sessions.
    Events naming a lesson this box does not know count under lesson null; groups whose
    session or student is not (or no longer) on the box are left out."""
    tallies = await _tallies(s, session_ids)
    lessons = await _known(s, Lesson, {k[3] for k in tallies if k[3] is not None})
    users = await _known(s, User, {k[2] for k in tallies})
    sessions = await _known(s, Session, {k[1] for k in tallies})
    merged: dict[GroupKey, _Tally] = {}
    for (org_id, session_id, user_id, lesson_id), tally in sorted(
        tallies.items(), key=lambda kv: tuple(x or "" for x in kv[0])
    ):
        if (org_id, session_id) not in sessions or (org_id, user_id) not in users:
            continue
        if lesson_id is not None and (org_id, lesson_id) not in lessons:
            lesson_id = None
        key = (org_id, session_id, user_id, lesson_id)
        if key in merged:
            merged[key].merge(tally)
        else:
            merged[key] = tally
    return {
        summary_id(session_id, user_id, lesson_id): {
            "org_id": org_id,
            "session_id": session_id,
            "user_id": user_id,
            "lesson_id": lesson_id,
            **tally.values(),
        }
        for (org_id, session_id, user_id, lesson_id), tally in merged.items()
    }


async def resummarise(s: AsyncSession, session_ids: list[str], now: datetime) -> int:
    """Recompute the summaries of these sessions inside the caller's write transaction; store
    and queue those that changed. Returns how many changed."""
    if not session_ids:
        return 0
    computed = await _summaries(s, session_ids)
    stored = {
        row.id: row
        for row in (
            await s.execute(select(EventSummary).where(EventSummary.id.in_(list(computed))))
        ).scalars()
    }
    changed: list[EventSummary] = []
    for summary_key, values in computed.items():
        row = stored.get(summary_key)
        if row is None:
            row = EventSummary(id=summary_key, created_at=now, updated_at=now, **values)
            s.add(row)
            changed.append(row)
        elif any(getattr(row, c) != values[c] for c in SUMMARY_COLUMNS) or row.deleted_at:
            for column in SUMMARY_COLUMNS:
                setattr(row, column, values[column])
            row.deleted_at = None
            row.updated_at = now
            changed.append(row)
    if changed:
        await enqueue_rows(s, list(changed))
    return len(changed)


async def summarise_events(db: Database, now: datetime, now_ms: int) -> SummaryReport:
    """Bring the summaries up to date with the events stored since the last call and queue
    the changed ones for the org server (see the module docstring)."""
    report = SummaryReport()
    sessions, mark, report.rescanned = await _changed_sessions(db, now_ms)
    if mark is None:
        return report
    report.sessions = len(sessions)
    slices = [
        sessions[i : i + SESSIONS_PER_SLICE] for i in range(0, len(sessions), SESSIONS_PER_SLICE)
    ] or [[]]
    for n, chunk in enumerate(slices):
        async with db.write() as s:
            report.changed += await resummarise(s, chunk, now)
            if n == len(slices) - 1:
                # The watermark moves with the last slice: a run cut short recomputes all of
                # its sessions next time (unchanged rows are not queued again).
                state = await s.get(SyncState, WATERMARK_KEY)
                if state is None:
                    s.add(SyncState(name=WATERMARK_KEY, value=mark))
                else:
                    state.value = mark
    return report
