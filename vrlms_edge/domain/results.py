"""Results: what events mean for each student's lesson, who may read them, and the analytics.

`apply_events` runs inside the batch writer's transaction (on the hot write lane,
store/raw.py), so a Result row (one per user,
lesson and session) changes together with the events that changed it, exactly once:

- `lesson_start`: not_started -> in_progress;
- `progress` (`data.progress` 0..1): progress rises to it (never falls), status in_progress;
- `result` (`data.score`, `data.completed`): score set; completed -> status completed, progress 1;
- `lesson_end` (`data.completed`) and `complete`: completed as above (`complete` always);
- time_spent_ms: the sum of the gaps between consecutive such events of the row that are at
  most IDLE_GAP_MS apart (a longer gap is time away), or `data.time_spent_ms` if larger.

Attendance: the first event of a student attributed to a session records that they attended.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain.principal import Principal
from vrlms_edge.errors import forbidden, not_found
from vrlms_edge.store.models import (
    Attendance,
    Class,
    Enrollment,
    InteractionEvent,
    Result,
    ResultStatus,
    Role,
    Session,
    SessionStatus,
    User,
    new_id,
)
from vrlms_edge.store.raw import RawTable
from vrlms_edge.sync.outbox import enqueue_raw, row_payload

if TYPE_CHECKING:
    from vrlms_edge.domain.events import NewEvent

RESULT_KINDS: Final = frozenset({"progress", "result", "lesson_start", "lesson_end", "complete"})
# Two result events further apart than this were separated by time away from the lesson.
IDLE_GAP_MS: Final = 60_000
# An event up to this long before a session's start or after its end still belongs to it
# (headset clock estimates and a lesson_start sent just before play).
SESSION_SLACK_MS: Final = 60_000
# Offline uploads of this age still find their session; older sessions are not searched.
OFFLINE_WINDOW_MS: Final = 14 * 24 * 3600 * 1000
# A user's sessions are read again after this long (a start must be seen within a blink).
SESSION_REFRESH_MS: Final = 500
# Gaze given as yaw/pitch is counted in cells of this many degrees.
GAZE_CELL_DEG: Final = 30


class Row(msgspec.Struct, kw_only=True):
    """Base of answer rows (keyword-only msgspec structs)."""


# --- session attribution and attendance ------------------------------------------------------


@dataclass(slots=True)
class SessionSpan:
    session_id: str
    org_id: str
    lesson_id: str | None
    start_ms: int
    end_ms: int | None  # None while the session is live

    def covers(self, t_ms: int) -> bool:
        if t_ms < self.start_ms - SESSION_SLACK_MS:
            return False
        return self.end_ms is None or t_ms <= self.end_ms + SESSION_SLACK_MS


class SessionFinder:
    """Which session a student's event belongs to: a started session of one of their classes
    whose time span covers the event's time (the latest one if several do)."""

    def __init__(self) -> None:
        self._spans: dict[str, tuple[int, list[SessionSpan]]] = {}
        self.lesson_of: dict[str, str | None] = {}

    def attribute(self, conn: sqlite3.Connection, events: list[NewEvent], now_ms: int) -> None:
        """Set `session_id` of the events that do not know it yet (a live connection tells)."""
        unknown = [e for e in events if e.session_id is None and e.user_id is not None]
        if not unknown:
            return
        spans = self._spans
        stale = [
            u
            for u in {e.user_id for e in unknown if e.user_id is not None}
            if u not in spans or now_ms - spans[u][0] > SESSION_REFRESH_MS
        ]
        if stale:
            self._load(conn, stale, now_ms)
        for e in unknown:
            if e.user_id is None:
                continue
            best: SessionSpan | None = None
            for span in spans[e.user_id][1]:
                if span.covers(e.t_ms) and (best is None or span.start_ms > best.start_ms):
                    best = span
            e.session_id = best.session_id if best is not None else None

    def _load(self, conn: sqlite3.Connection, users: list[str], now_ms: int) -> None:
        horizon = sql_time(datetime.fromtimestamp((now_ms - OFFLINE_WINDOW_MS) / 1000, tz=UTC))
        found: dict[str, list[SessionSpan]] = {u: [] for u in users}
        for chunk in _chunks(users):
            rows = conn.execute(
                "SELECT e.user_id, s.id, s.org_id, s.lesson_id, s.status, s.started_at,"
                " s.ended_at FROM enrollments e JOIN sessions s ON s.class_id = e.class_id"
                f" WHERE e.user_id IN ({_marks(len(chunk))}) AND e.deleted_at IS NULL"
                " AND s.deleted_at IS NULL AND s.started_at IS NOT NULL"
                " AND (s.ended_at IS NULL OR s.ended_at > ?)",
                [*chunk, horizon],
            )
            for user_id, sid, org_id, lesson_id, status, started, ended in rows:
                live = status in (SessionStatus.playing, SessionStatus.paused) or ended is None
                found[user_id].append(
                    SessionSpan(
                        session_id=sid,
                        org_id=org_id,
                        lesson_id=lesson_id,
                        start_ms=_text_ms(started),
                        end_ms=None if live else _text_ms(ended),
                    )
                )
                self.lesson_of[sid] = lesson_id
        for user_id, spans in found.items():
            self._spans[user_id] = (now_ms, spans)

    def committed(self) -> None:
        return None

    def rolled_back(self) -> None:
        return None


class AttendanceBook:
    """(session, user) pairs known to have an attendance row, so most batches need no query."""

    def __init__(self) -> None:
        self.known: set[tuple[str, str]] = set()
        self.pending: set[tuple[str, str]] = set()

    def committed(self) -> None:
        self.known |= self.pending
        self.pending.clear()

    def rolled_back(self) -> None:
        self.pending.clear()


# --- deriving results ---------------------------------------------------------------------------

# Values per statement in `IN (...)` lists: far below SQLite's limit of 32766 variables.
IN_CHUNK: Final = 500

RESULTS: Final = RawTable(Result)
ATTENDANCE: Final = RawTable(Attendance)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    ordered = list(values)
    for i in range(0, len(ordered), IN_CHUNK):
        yield ordered[i : i + IN_CHUNK]


def sql_time(when: datetime) -> str:
    """A UTC time as SQLAlchemy stores DateTime on SQLite (for SQL text on the hot lane)."""
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _text_ms(stored: str | None) -> int:
    if stored is None:
        return 0
    return int(datetime.fromisoformat(stored).replace(tzinfo=UTC).timestamp() * 1000)


@dataclass(slots=True)
class ResultChange:
    """A Result row as one batch left it (for the teacher's live picture)."""

    org_id: str
    user_id: str
    lesson_id: str
    session_id: str | None
    status: str
    progress: float


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _decode(data: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _complete(row: Result) -> None:
    row.status = ResultStatus.completed
    row.progress = 1.0


def _apply_one(row: Result, event: NewEvent) -> None:
    data = _decode(event.data)
    if row.last_event_ms is None or event.t_ms > row.last_event_ms:
        if row.last_event_ms is not None and event.t_ms - row.last_event_ms <= IDLE_GAP_MS:
            row.time_spent_ms += event.t_ms - row.last_event_ms
        row.last_event_ms = event.t_ms
    started = row.status == ResultStatus.not_started
    kind = event.kind
    if kind == "progress":
        value = _number(data.get("progress"))
        if value is not None:
            row.progress = max(row.progress, min(1.0, max(0.0, value)))
    elif kind == "result":
        score = _number(data.get("score"))
        if score is not None:
            row.score = score
        if data.get("completed") is True:
            _complete(row)
    elif kind == "lesson_end":
        if data.get("completed") is True:
            _complete(row)
    elif kind == "complete":
        score = _number(data.get("score"))
        if score is not None:
            row.score = score
        _complete(row)
    spent = _number(data.get("time_spent_ms"))
    if spent is not None and spent > row.time_spent_ms:
        row.time_spent_ms = int(spent)
    if started and row.status == ResultStatus.not_started:
        row.status = ResultStatus.in_progress


Outbox = list[tuple[str, str, str, dict[str, Any]]]  # (org_id, entity, entity_id, payload)


def _record_attendance(
    conn: sqlite3.Connection,
    events: list[NewEvent],
    now: datetime,
    book: AttendanceBook,
    outbox: Outbox,
) -> None:
    known, pending = book.known, book.pending
    # The first event of each (session, user): over the reversed batch the first one is the
    # last written. One pass without per-event set lookups; a batch has few distinct pairs.
    candidates = {(e.session_id, e.user_id): e for e in reversed(events)}
    firsts: dict[tuple[str, str], NewEvent] = {}
    for (session_id, user_id), e in candidates.items():
        if session_id is not None and user_id is not None:
            pair = (session_id, user_id)
            if pair not in known and pair not in pending:
                firsts[pair] = e
    if not firsts:
        return
    present: set[tuple[str, str]] = set()
    sessions = list({p[0] for p in firsts})
    for users in _chunks({p[1] for p in firsts}):
        for chunk in _chunks(sessions):
            present.update(
                conn.execute(
                    "SELECT session_id, user_id FROM attendance"
                    f" WHERE session_id IN ({_marks(len(chunk))})"
                    f" AND user_id IN ({_marks(len(users))})",
                    [*chunk, *users],
                )
            )
    for (session_id, user_id), e in firsts.items():
        if (session_id, user_id) not in present:
            # Events arrived without a live connection (an offline upload): they still show
            # that the student took part.
            row = Attendance(
                id=new_id(),
                org_id=e.org_id,
                session_id=session_id,
                user_id=user_id,
                device_id=e.device_pk,
                joined_at=now,
                left_at=None,
                deleted_at=None,
                created_at=now,
                updated_at=now,
            )
            ATTENDANCE.insert(conn, row)
            outbox.append((e.org_id, "attendance", row.id, row_payload(row)))
        pending.add((session_id, user_id))


def apply_events(
    conn: sqlite3.Connection, events: list[NewEvent], now: datetime, book: AttendanceBook
) -> list[ResultChange]:
    """Update attendance and Result rows for newly stored events, inside the batch's
    transaction on the hot write lane (store/raw.py). A few statements per batch whatever its
    size: rows are read and the outbox written in bulk."""
    outbox: Outbox = []
    _record_attendance(conn, events, now, book, outbox)
    changes = _apply_results(conn, events, now, outbox)
    if outbox:
        enqueue_raw(conn, outbox)
    return changes


def _apply_results(
    conn: sqlite3.Connection, events: list[NewEvent], now: datetime, outbox: Outbox
) -> list[ResultChange]:
    relevant = [
        e
        for e in events
        if e.kind in RESULT_KINDS and e.user_id is not None and e.lesson_id is not None
    ]
    if not relevant:
        return []
    lesson_ids = list({e.lesson_id for e in relevant if e.lesson_id is not None})
    user_ids = list({e.user_id for e in relevant if e.user_id is not None})
    known_lessons: dict[str, str] = {}
    rows: dict[tuple[str, str, str | None], Result] = {}
    for lessons in _chunks(lesson_ids):
        known_lessons.update(
            conn.execute(
                f"SELECT id, org_id FROM lessons WHERE id IN ({_marks(len(lessons))})", lessons
            )
        )
        for users in _chunks(user_ids):
            for r in RESULTS.where(
                conn,
                f"user_id IN ({_marks(len(users))}) AND lesson_id IN ({_marks(len(lessons))})",
                [*users, *lessons],
            ):
                rows[(r.user_id, r.lesson_id, r.session_id)] = r
    before: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    touched: dict[tuple[str, str, str | None], Result] = {}
    for e in relevant:
        lesson_id, user_id = e.lesson_id, e.user_id
        if lesson_id is None or user_id is None or known_lessons.get(lesson_id) != e.org_id:
            continue  # an unknown lesson: the event is kept, no result can name it
        key = (user_id, lesson_id, e.session_id)
        row = rows.get(key)
        if row is None:
            row = rows[key] = _new_result(e.org_id, key, now)
        elif key not in touched and key not in before:
            before[key] = RESULTS.snapshot(row)
        _apply_one(row, e)
        touched[key] = row
    changes = []
    for key, row in touched.items():
        row.updated_at = now
        previous = before.get(key)
        if previous is None:
            RESULTS.insert(conn, row)
        else:
            RESULTS.update(conn, row, previous)
        outbox.append((row.org_id, "results", row.id, row_payload(row)))
        changes.append(
            ResultChange(
                org_id=row.org_id,
                user_id=row.user_id,
                lesson_id=row.lesson_id,
                session_id=row.session_id,
                status=row.status,
                progress=row.progress,
            )
        )
    return changes


def _new_result(org_id: str, key: tuple[str, str, str | None], now: datetime) -> Result:
    user_id, lesson_id, session_id = key
    return Result(
        id=new_id(),
        org_id=org_id,
        user_id=user_id,
        lesson_id=lesson_id,
        session_id=session_id,
        status=ResultStatus.not_started,
        progress=0.0,
        score=None,
        time_spent_ms=0,
        last_event_ms=None,
        deleted_at=None,
        created_at=now,
        updated_at=now,
    )


# --- who may read what ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """What a caller may read: admin -> the org; teacher -> their classes' sessions and
    students; student -> their own rows."""

    org_id: str
    role: Role
    user_id: str

    def _teacher_sessions(self) -> Any:
        return (
            select(Session.id)
            .join(Class, Class.id == Session.class_id)
            .where(Class.teacher_id == self.user_id, Class.org_id == self.org_id)
        )

    def _teacher_students(self) -> Any:
        return (
            select(Enrollment.user_id)
            .join(Class, Class.id == Enrollment.class_id)
            .where(Class.teacher_id == self.user_id, Enrollment.deleted_at.is_(None))
        )

    def restrict_results(self, query: Select[Any]) -> Select[Any]:
        query = query.where(Result.org_id == self.org_id, Result.deleted_at.is_(None))
        if self.role == Role.admin:
            return query
        if self.role == Role.teacher:
            return query.where(
                or_(
                    Result.session_id.in_(self._teacher_sessions()),
                    and_(
                        Result.session_id.is_(None),
                        Result.user_id.in_(self._teacher_students()),
                    ),
                )
            )
        return query.where(Result.user_id == self.user_id)

    def restrict_events(self, query: Select[Any]) -> Select[Any]:
        query = query.where(InteractionEvent.org_id == self.org_id)
        if self.role == Role.admin:
            return query
        if self.role == Role.teacher:
            return query.where(
                or_(
                    InteractionEvent.session_id.in_(self._teacher_sessions()),
                    and_(
                        InteractionEvent.session_id.is_(None),
                        InteractionEvent.user_id.in_(self._teacher_students()),
                    ),
                )
            )
        return query.where(InteractionEvent.user_id == self.user_id)


def scope_of(principal: Principal) -> Scope:
    return Scope(org_id=principal.org_id, role=principal.role, user_id=principal.user_id)


async def check_session(s: AsyncSession, scope: Scope, session_id: str) -> Session:
    """The session if the caller may read it: another org's -> 404, another teacher's -> 403."""
    row = await s.get(Session, session_id)
    if row is None or row.org_id != scope.org_id or row.deleted_at is not None:
        raise not_found("session")
    if scope.role == Role.teacher:
        klass = await s.get(Class, row.class_id)
        if klass is None or klass.teacher_id != scope.user_id:
            raise forbidden("this session belongs to another teacher's class", "not_your_class")
    return row


async def check_class(s: AsyncSession, scope: Scope, class_id: str) -> Class:
    row = await s.get(Class, class_id)
    if row is None or row.org_id != scope.org_id or row.deleted_at is not None:
        raise not_found("class")
    if scope.role == Role.teacher and row.teacher_id != scope.user_id:
        raise forbidden("this class belongs to another teacher", "not_your_class")
    return row


# --- listing ----------------------------------------------------------------------------


class ResultFilter(msgspec.Struct, kw_only=True):
    session_id: str | None = None
    class_id: str | None = None
    user_id: str | None = None
    lesson_id: str | None = None


class ResultOut(Row):
    id: str
    user_id: str
    lesson_id: str
    session_id: str | None
    status: Literal["not_started", "in_progress", "completed"]
    progress: float
    score: float | None
    time_spent_ms: int
    updated_at: str


# CSV columns: the API's fields, in the API's order.
RESULT_COLUMNS: Final = tuple(ResultOut.__struct_fields__)


def result_out(row: Result) -> ResultOut:
    return ResultOut(
        id=row.id,
        user_id=row.user_id,
        lesson_id=row.lesson_id,
        session_id=row.session_id,
        status=ResultStatus(row.status).value,
        progress=row.progress,
        score=row.score,
        time_spent_ms=row.time_spent_ms,
        updated_at=row.updated_at.isoformat().replace("+00:00", "Z"),
    )


async def list_results(
    s: AsyncSession,
    scope: Scope,
    wanted: ResultFilter,
    *,
    limit: int,
    after: str | None,
) -> tuple[list[ResultOut], str | None]:
    """One page of results in the caller's scope, ordered by id; the next page's cursor."""
    if wanted.session_id is not None:
        await check_session(s, scope, wanted.session_id)
    if wanted.class_id is not None:
        await check_class(s, scope, wanted.class_id)
    query = scope.restrict_results(select(Result))
    if wanted.session_id is not None:
        query = query.where(Result.session_id == wanted.session_id)
    if wanted.class_id is not None:
        query = query.where(
            Result.session_id.in_(select(Session.id).where(Session.class_id == wanted.class_id))
        )
    if wanted.user_id is not None:
        query = query.where(Result.user_id == wanted.user_id)
    if wanted.lesson_id is not None:
        query = query.where(Result.lesson_id == wanted.lesson_id)
    if after is not None:
        query = query.where(Result.id > after)
    rows = list((await s.execute(query.order_by(Result.id).limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return [result_out(r) for r in rows], (rows[-1].id if more and rows else None)


# --- analytics ----------------------------------------------------------------------------


class LessonSummary(Row):
    lesson_id: str
    status: str
    progress: float
    score: float | None
    time_spent_ms: int


class StudentSummary(Row):
    user_id: str
    nickname: str
    display_name: str
    attended: bool
    events: int
    lessons: list[LessonSummary]
    gaze: dict[str, int]


class MinuteCounts(Row):
    minute_ms: int
    click: int = 0
    action: int = 0


class ActionOut(Row):
    t_ms: int
    user_id: str | None
    kind: str
    target: str | None


class Analytics(Row):
    session_id: str
    class_id: str
    students: list[StudentSummary]
    gaze: dict[str, int]
    timeline: list[MinuteCounts]
    actions: list[ActionOut]


# The newest clicks/actions listed one by one (the per-minute counts cover all of them).
MAX_LISTED_ACTIONS: Final = 500


def gaze_target(data: dict[str, Any]) -> str | None:
    """A gaze event's target: its `target` id, else its yaw/pitch cell, else None."""
    target = data.get("target")
    if isinstance(target, str) and target:
        return target
    yaw, pitch = _number(data.get("yaw")), _number(data.get("pitch"))
    if yaw is None or pitch is None:
        return None
    cell_yaw = math.floor(yaw / GAZE_CELL_DEG) * GAZE_CELL_DEG
    cell_pitch = math.floor(pitch / GAZE_CELL_DEG) * GAZE_CELL_DEG
    return f"yaw:{cell_yaw}/pitch:{cell_pitch}"


def _target_of_action(data: dict[str, Any]) -> str | None:
    for name in ("target", "action", "id", "name"):
        value = data.get(name)
        if isinstance(value, str) and value:
            return value
    return None


async def session_analytics(s: AsyncSession, scope: Scope, session_id: str) -> Analytics:
    session = await check_session(s, scope, session_id)
    enrolled = (
        await s.execute(
            select(User)
            .join(Enrollment, Enrollment.user_id == User.id)
            .where(Enrollment.class_id == session.class_id, Enrollment.deleted_at.is_(None))
        )
    ).scalars()
    people: dict[str, User] = {u.id: u for u in enrolled}
    attended = set(
        (await s.execute(select(Attendance.user_id).where(Attendance.session_id == session_id)))
        .scalars()
        .all()
    )
    result_rows = list(
        (
            await s.execute(
                select(Result)
                .where(Result.session_id == session_id, Result.deleted_at.is_(None))
                .order_by(Result.lesson_id)
            )
        ).scalars()
    )
    counts: dict[str, int] = {}
    gaze_by_user: dict[str, dict[str, int]] = {}
    gaze_all: dict[str, int] = {}
    minutes: dict[int, MinuteCounts] = {}
    actions: list[ActionOut] = []
    stream = await s.stream(
        select(
            InteractionEvent.user_id,
            InteractionEvent.kind,
            InteractionEvent.t_ms,
            InteractionEvent.data,
        )
        .where(InteractionEvent.session_id == session_id)
        .order_by(InteractionEvent.t_ms, InteractionEvent.id)
    )
    async for user_id, kind, t_ms, data in stream:
        uid = user_id or ""
        counts[uid] = counts.get(uid, 0) + 1
        payload = data if isinstance(data, dict) else {}
        if kind == "gaze":
            target = gaze_target(payload)
            if target is not None:
                per_user = gaze_by_user.setdefault(uid, {})
                per_user[target] = per_user.get(target, 0) + 1
                gaze_all[target] = gaze_all.get(target, 0) + 1
        elif kind in ("click", "action"):
            minute = t_ms - t_ms % 60_000
            bucket = minutes.setdefault(minute, MinuteCounts(minute_ms=minute))
            if kind == "click":
                bucket.click += 1
            else:
                bucket.action += 1
            actions.append(
                ActionOut(t_ms=t_ms, user_id=user_id, kind=kind, target=_target_of_action(payload))
            )
    others = {r.user_id for r in result_rows} | {u for u in counts if u} | attended
    missing = others - set(people)
    if missing:
        for user in (await s.execute(select(User).where(User.id.in_(missing)))).scalars():
            people[user.id] = user
    students = [
        StudentSummary(
            user_id=user.id,
            nickname=user.nickname,
            display_name=user.display_name,
            attended=user.id in attended,
            events=counts.get(user.id, 0),
            lessons=[
                LessonSummary(
                    lesson_id=r.lesson_id,
                    status=r.status,
                    progress=r.progress,
                    score=r.score,
                    time_spent_ms=r.time_spent_ms,
                )
                for r in result_rows
                if r.user_id == user.id
            ],
            gaze=gaze_by_user.get(user.id, {}),
        )
        for user in sorted(people.values(), key=lambda u: (u.nickname, u.id))
        if user.role == Role.student or user.id in others
    ]
    return Analytics(
        session_id=session.id,
        class_id=session.class_id,
        students=students,
        gaze=gaze_all,
        timeline=[minutes[m] for m in sorted(minutes)],
        actions=actions[-MAX_LISTED_ACTIONS:],
    )


def _ms(when: datetime | None) -> int:
    return 0 if when is None else int(when.timestamp() * 1000)
