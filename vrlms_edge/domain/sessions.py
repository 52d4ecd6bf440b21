"""Lesson sessions: the state machine every teacher command goes through.

A session's state is a small record (status, lesson, time anchor, attention, rev). Every
change is one new rev: it is computed and stored in one write transaction (the session row and
a SessionRevision row whose unique (session_id, rev) key makes a duplicated rev impossible),
then handed to the one broadcast point, `StateBroadcast.publish`. REST endpoints and WebSocket
`command`s both call `change_state`; nothing else changes a session's state.

    create -> idle; start: idle|paused|stopped -> playing; pause: playing -> paused;
    stop: playing|paused -> stopped; launch/seek/attention keep the status (see below).

Around it: sessions as objects (create, lesson plan, schedule, views with the caller's scope)
and the auto start of scheduled sessions created with `auto_start: true`.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal, Protocol, TypeVar

import msgspec
from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from vrlms_edge.domain.paging import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from vrlms_edge.domain.principal import Principal
from vrlms_edge.errors import AppError, conflict, forbidden, not_found
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    Class,
    Enrollment,
    Lesson,
    Role,
    Session,
    SessionLesson,
    SessionStatus,
    Tenant,
    new_id,
)
from vrlms_edge.store.raw import RawTable
from vrlms_edge.sync.outbox import enqueue_raw, enqueue_rows, values_payload

M = TypeVar("M", bound=Tenant)
_S = TypeVar("_S", "Session", "SessionRecord")


class Action(enum.StrEnum):
    play = "play"  # REST: /api/session/start/
    pause = "pause"
    stop = "stop"
    launch = "launch"
    seek = "seek"
    attention = "attention"


class LessonRef(msgspec.Struct, kw_only=True):
    id: str
    title: str
    apk_package: str
    launch: dict[str, Any] = {}
    duration_s: int | None = None


class Attention(msgspec.Struct, kw_only=True):
    on: bool = False
    message: str | None = None


class SessionState(msgspec.Struct, kw_only=True, tag="state", tag_field="type"):
    """The `state` message of PROTOCOL.md (server -> every member, and inside `welcome`)."""

    session_id: str
    rev: int
    status: Literal["idle", "playing", "paused", "stopped"]
    lesson: LessonRef | None
    anchor_server_ms: int
    anchor_position_ms: int
    attention: Attention


class StateBroadcast(Protocol):
    """Where new session states go after commit (the live hub), and how far ahead a start is
    anchored for the members of a session's room."""

    def lead_ms(self, session_id: str) -> int: ...

    def publish(self, org_id: str, class_id: str, state: SessionState) -> None: ...


class NoBroadcast:
    """Stand-in when no live hub runs (CLI, tests of the domain alone)."""

    def __init__(self, lead_ms: int = 250) -> None:
        self._lead_ms = lead_ms

    def lead_ms(self, session_id: str) -> int:
        return self._lead_ms

    def publish(self, org_id: str, class_id: str, state: SessionState) -> None:
        return None


class Change(msgspec.Struct, kw_only=True):
    """A teacher command's parameters (REST body fields and WS `command` fields)."""

    action: Action
    lesson_id: str | None = None
    position_ms: int | None = None
    lead_ms: int | None = None
    on: bool | None = None
    message: str | None = None


# Bounds on a lead the teacher asks for explicitly.
MAX_LEAD_MS = 10_000
MAX_POSITION_MS = 24 * 3600 * 1000
# sessions.attention_message is a 500-character column.
MAX_ATTENTION_MESSAGE: Final = 500


def lesson_ref(lesson: Lesson) -> LessonRef:
    return LessonRef(
        id=lesson.id,
        title=lesson.title,
        apk_package=lesson.apk_package,
        launch=lesson.launch or {},
        duration_s=lesson.duration_s,
    )


class SessionRecord(msgspec.Struct):
    """A session as a command reads and changes it: its state columns as sqlite3 gives them
    (datetimes as stored) and what decides who may command it. A command's transaction works
    on this rather than on a model object: building one, comparing and binding its twenty
    columns cost more than the statements themselves."""

    id: str
    org_id: str
    class_id: str
    status: str
    lesson_id: str | None
    anchor_server_ms: int
    anchor_position_ms: int
    attention_on: bool
    attention_message: str | None
    rev: int
    started_at: str | None
    ended_at: str | None
    deleted_at: str | None
    teacher_id: str | None  # the class's teacher


def position_at(session: SessionRecord, now_ms: int) -> int:
    """Where the lesson is at server time now_ms (before the anchor: the anchor position)."""
    if session.status != SessionStatus.playing:
        return session.anchor_position_ms
    return session.anchor_position_ms + max(0, now_ms - session.anchor_server_ms)


def _visible(actor: Principal, row: _S | None) -> _S:
    if row is None or row.org_id != actor.org_id or row.deleted_at is not None:
        raise not_found("session")
    if actor.role not in (Role.admin, Role.teacher):
        raise forbidden()
    return row


def _check_teacher(actor: Principal, teacher_id: str | None) -> None:
    """`teacher_id`: the session's class's teacher (None: no class, or nobody teaches it)."""
    if actor.role == Role.admin:
        return
    if teacher_id != actor.user_id:
        raise forbidden("this session belongs to another teacher's class", "not_your_class")


async def load_controlled_session(db_session: Any, actor: Principal, session_id: str) -> Session:
    """The session if `actor` may control it: another org's -> 404, another teacher's -> 403."""
    found: Session | None = await db_session.get(Session, session_id)
    row = _visible(actor, found)
    if actor.role != Role.admin:
        klass = await db_session.get(Class, row.class_id)
        _check_teacher(actor, klass.teacher_id if klass is not None else None)
    return row


# The command path's rows on the hot write lane (store/raw.py).
SESSIONS: Final = RawTable(Session)
_RECORD_SQL: Final = (
    f"SELECT {', '.join(SessionRecord.__struct_fields__[:-1])},"
    " (SELECT teacher_id FROM classes WHERE classes.id = sessions.class_id)"
    " FROM sessions WHERE id = ?"
)
_PLAN_SQL: Final = (
    "SELECT lesson_id FROM session_lessons"
    " WHERE session_id = ? AND deleted_at IS NULL ORDER BY position"
)
# Every column a command may change, and the whole row back for the org server's copy.
_UPDATE_SQL: Final = (
    "UPDATE sessions SET status = ?, lesson_id = ?, anchor_server_ms = ?,"
    " anchor_position_ms = ?, attention_on = ?, attention_message = ?, rev = ?,"
    " started_at = ?, ended_at = ?, updated_at = ?"
    f" WHERE id = ? RETURNING {SESSIONS.column_list}"
)
_REVISION_SQL: Final = (
    "INSERT INTO session_revisions (id, org_id, session_id, rev, action, actor_id, status,"
    " lesson_id, anchor_server_ms, anchor_position_ms, attention_on, attention_message,"
    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _record(conn: sqlite3.Connection, session_id: str) -> SessionRecord | None:
    found = conn.execute(_RECORD_SQL, (session_id,)).fetchone()
    if found is None:
        return None
    record = SessionRecord(*found)
    record.attention_on = bool(record.attention_on)  # (stored as 0/1)
    return record


def _plan_raw(conn: sqlite3.Connection, session_id: str) -> list[str]:
    return [lesson_id for (lesson_id,) in conn.execute(_PLAN_SQL, (session_id,))]


_LESSON_REF_SQL: Final = (
    "SELECT id, title, apk_package, launch, duration_s FROM lessons WHERE id = ?"
)
# LessonRefs by the columns they were made of: every command states its lesson, and building
# a model row and its ref (the launch JSON decoded) cost more than reading the columns.
# Shared by the states that carry them, never changed.
_lesson_refs: dict[tuple[Any, ...], LessonRef] = {}
_LESSON_REFS_MAX: Final = 256


def lesson_ref_raw(conn: sqlite3.Connection, lesson_id: str) -> LessonRef | None:
    """`lesson_ref` of a lesson, read on a raw lane (store/raw.py)."""
    found = conn.execute(_LESSON_REF_SQL, (lesson_id,)).fetchone()
    if found is None:
        return None
    ref = _lesson_refs.get(found)
    if ref is None:
        if len(_lesson_refs) >= _LESSON_REFS_MAX:
            _lesson_refs.clear()
        id_, title, apk_package, launch, duration_s = found
        ref = _lesson_refs[found] = LessonRef(
            id=id_,
            title=title,
            apk_package=apk_package,
            launch=(msgspec.json.decode(launch) if launch is not None else None) or {},
            duration_s=duration_s,
        )
    return ref


def state_from(row: Session | SessionRecord, lesson: LessonRef | None) -> SessionState:
    """The `state` message of a session row (`lesson`: the row's current lesson)."""
    return SessionState(
        session_id=row.id,
        rev=row.rev,
        status=SessionStatus(row.status).value,
        lesson=lesson,
        anchor_server_ms=row.anchor_server_ms,
        anchor_position_ms=row.anchor_position_ms,
        attention=Attention(on=row.attention_on, message=row.attention_message),
    )


async def state_of(db_session: Any, row: Session) -> SessionState:
    lesson = await db_session.get(Lesson, row.lesson_id) if row.lesson_id else None
    return state_from(row, lesson_ref(lesson) if lesson is not None else None)


def _check_position(position_ms: int | None) -> None:
    if position_ms is not None and not 0 <= position_ms <= MAX_POSITION_MS:
        raise AppError(422, "validation_error", "position_ms out of range")


def _pick_lesson(row: SessionRecord, wanted: str | None, plan: Callable[[], list[str]]) -> str:
    ids = plan()
    if wanted is not None:
        if wanted not in ids:
            raise not_found("lesson in this session")
        return wanted
    if row.lesson_id is not None and row.lesson_id in ids:
        return row.lesson_id
    if not ids:
        raise conflict("no_lesson", "this session has no lessons: add one first")
    return ids[0]


def _invalid(action: Action, status: str) -> AppError:
    return conflict("invalid_transition", f"cannot {action.value} a session that is {status}")


def _apply(
    row: SessionRecord, change: Change, now_ms: int, lead_ms: int, plan: Callable[[], list[str]]
) -> None:
    """Compute the next state into `row` (not yet persisted); `plan()` reads the session's
    lesson ids (only play and launch need them)."""
    status = SessionStatus(row.status)
    action = change.action
    _check_position(change.position_ms)
    if action == Action.play:
        if status == SessionStatus.playing:
            raise _invalid(action, status)
        lesson_id = _pick_lesson(row, change.lesson_id, plan)
        if change.position_ms is not None:
            position = change.position_ms
        elif status == SessionStatus.paused and lesson_id == row.lesson_id:
            position = row.anchor_position_ms  # resume where it was paused
        else:
            position = 0
        row.lesson_id = lesson_id
        row.status = SessionStatus.playing
        row.anchor_server_ms = now_ms + lead_ms
        row.anchor_position_ms = position
    elif action == Action.pause:
        if status != SessionStatus.playing:
            raise _invalid(action, status)
        row.anchor_position_ms = position_at(row, now_ms)
        row.anchor_server_ms = now_ms
        row.status = SessionStatus.paused
    elif action == Action.stop:
        if status not in (SessionStatus.playing, SessionStatus.paused):
            raise _invalid(action, status)
        row.anchor_position_ms = position_at(row, now_ms)
        row.anchor_server_ms = now_ms
        row.status = SessionStatus.stopped
    elif action == Action.launch:
        # Headsets open the lesson's app and hold at the start; play follows.
        row.lesson_id = _pick_lesson(row, change.lesson_id, plan)
        row.anchor_position_ms = change.position_ms or 0
        row.anchor_server_ms = now_ms
        if status == SessionStatus.playing:
            row.anchor_server_ms = now_ms + lead_ms
        elif status == SessionStatus.stopped:
            row.status = SessionStatus.paused
    elif action == Action.seek:
        if status not in (SessionStatus.playing, SessionStatus.paused):
            raise _invalid(action, status)
        if change.position_ms is None:
            raise AppError(422, "validation_error", "seek needs position_ms")
        row.anchor_position_ms = change.position_ms
        row.anchor_server_ms = now_ms + (lead_ms if status == SessionStatus.playing else 0)
    elif action == Action.attention:
        if change.on is None:
            raise AppError(422, "validation_error", "attention needs on: true|false")
        if change.message is not None and len(change.message) > MAX_ATTENTION_MESSAGE:
            # The column holds 500 characters; PostgreSQL would refuse more (a 500 otherwise).
            raise AppError(
                422,
                "validation_error",
                f"message is limited to {MAX_ATTENTION_MESSAGE} characters",
                detail={"path": "$.message"},
            )
        row.attention_on = change.on
        row.attention_message = (change.message or None) if change.on else None


def _lead(change: Change, broadcast: StateBroadcast, session_id: str) -> int:
    if change.lead_ms is not None:
        if not 0 <= change.lead_ms <= MAX_LEAD_MS:
            raise AppError(422, "validation_error", f"lead_ms must be 0..{MAX_LEAD_MS}")
        return change.lead_ms
    return broadcast.lead_ms(session_id)


# Who may command the session: raises AppError, or answers the record to change.
Check = Callable[[sqlite3.Connection, SessionRecord | None], SessionRecord]


async def _commit_change(
    db: Database,
    clock: ServerClock,
    broadcast: StateBroadcast,
    session_id: str,
    change: Change,
    check: Check,
    actor_id: str | None,
) -> tuple[tuple[Any, ...], SessionState]:
    """Persist the change as a new rev (one transaction on the hot write lane), then publish
    it. Returns the session row as committed (its columns as sqlite3 gives them, see
    `RawTable.values`) and its state."""
    lead_ms = _lead(change, broadcast, session_id)

    def commit(
        conn: sqlite3.Connection,
    ) -> tuple[SessionRecord, tuple[Any, ...], SessionState]:
        record = check(conn, _record(conn, session_id))
        now_ms = clock.now_ms()
        _apply(record, change, now_ms, lead_ms, lambda: _plan_raw(conn, session_id))
        record.rev += 1
        stamp = SESSIONS.bind("updated_at", clock.datetime_at(now_ms))
        if record.status == SessionStatus.playing:
            record.ended_at = None
            if record.started_at is None:
                record.started_at = stamp
        if record.status == SessionStatus.stopped:
            record.ended_at = stamp
        # (in the order both statements take them)
        state_columns = (
            record.status,
            record.lesson_id,
            record.anchor_server_ms,
            record.anchor_position_ms,
            record.attention_on,
            record.attention_message,
        )
        row = conn.execute(
            _UPDATE_SQL,
            (*state_columns, record.rev, record.started_at, record.ended_at, stamp, session_id),
        ).fetchone()
        conn.execute(
            _REVISION_SQL,
            (
                new_id(),
                record.org_id,
                session_id,
                record.rev,
                change.action.value,
                actor_id,
                *state_columns,
                stamp,
                stamp,
            ),
        )
        # The org server gets the session's newest state with the same commit.
        enqueue_raw(conn, [(record.org_id, "sessions", session_id, values_payload(SESSIONS, row))])
        lesson = lesson_ref_raw(conn, record.lesson_id) if record.lesson_id else None
        return record, row, state_from(record, lesson)

    record, row, state = await db.write_raw(commit, on_loop=True)
    broadcast.publish(record.org_id, record.class_id, state)
    return row, state


async def change_state(
    db: Database,
    clock: ServerClock,
    broadcast: StateBroadcast,
    actor: Principal,
    session_id: str,
    change: Change,
) -> SessionState:
    """Apply one teacher command: new rev, persisted, then published. Raises AppError."""
    _, state = await _command(db, clock, broadcast, actor, session_id, change)
    return state


async def change_session(
    db: Database,
    clock: ServerClock,
    broadcast: StateBroadcast,
    actor: Principal,
    session_id: str,
    change: Change,
) -> SessionView:
    """`change_state`, answering the whole session object as of the new rev (REST)."""
    row, state = await _command(db, clock, broadcast, actor, session_id, change)
    async with db.read() as s:
        view = await session_view(s, SESSIONS.row(row))
    return msgspec.structs.replace(view, state=state)


async def _command(
    db: Database,
    clock: ServerClock,
    broadcast: StateBroadcast,
    actor: Principal,
    session_id: str,
    change: Change,
) -> tuple[tuple[Any, ...], SessionState]:
    def check(conn: sqlite3.Connection, record: SessionRecord | None) -> SessionRecord:
        record = _visible(actor, record)
        if actor.role != Role.admin:
            _check_teacher(actor, record.teacher_id)
        return record

    return await _commit_change(db, clock, broadcast, session_id, change, check, actor.user_id)


# --- sessions as objects: create, lessons, schedule, views ------------------------------------

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str, msgspec.Meta(max_length=512)]
Title = Annotated[str, msgspec.Meta(max_length=200)]
# A session holds a lesson plan, not a catalog.
MAX_SESSION_LESSONS: Final = 200


class SessionView(msgspec.Struct, kw_only=True):
    """The session object of PROTOCOL.md."""

    id: str
    class_id: str
    title: str
    scheduled_start_at: datetime | None
    scheduled_end_at: datetime | None
    auto_start: bool
    lessons: list[LessonRef]
    state: SessionState


class NewSession(msgspec.Struct, kw_only=True):
    """POST /api/session/create/."""

    class_id: Id
    title: Title | None = None
    lesson_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_SESSION_LESSONS)] = []
    scheduled_start_at: datetime | None = None
    scheduled_end_at: datetime | None = None
    # Start by itself at scheduled_start_at (never otherwise).
    auto_start: bool = False


class SessionPatch(msgspec.Struct, kw_only=True):
    """Changes to a session's title and schedule; absent fields stay, null clears."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    scheduled_start_at: datetime | msgspec.UnsetType | None = msgspec.UNSET
    scheduled_end_at: datetime | msgspec.UnsetType | None = msgspec.UNSET
    auto_start: bool | msgspec.UnsetType = msgspec.UNSET


class SessionFilter(msgspec.Struct, kw_only=True):
    """`GET /api/sessions/` query: a class timetable, a time window, or what comes next."""

    class_id: Id | None = None
    from_: datetime | None = msgspec.field(default=None, name="from")
    to: datetime | None = None
    # Only sessions not yet over and not stopped, soonest first (a student's "next: ...").
    upcoming: bool = False
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None


def _aware(value: datetime | None, path: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise AppError(
            422,
            "validation_error",
            "times need a timezone (e.g. 2026-03-01T10:15:00Z)",
            detail={"path": path},
        )
    return value


def _check_schedule(start: datetime | None, end: datetime | None, auto_start: bool) -> None:
    if start is not None and end is not None and end <= start:
        raise AppError(
            422,
            "validation_error",
            "scheduled_end_at must be after scheduled_start_at",
            detail={"path": "$.scheduled_end_at"},
        )
    if auto_start and start is None:
        raise AppError(
            422,
            "validation_error",
            "auto_start needs scheduled_start_at",
            detail={"path": "$.auto_start"},
        )


async def _org_row(s: AsyncSession, model: type[M], org_id: str, row_id: str, what: str) -> M:
    row = await s.get(model, row_id)
    if row is None or row.org_id != org_id or row.deleted_at is not None:
        raise not_found(what)
    return row


async def _is_enrolled(s: AsyncSession, class_id: str, user_id: str) -> bool:
    found = await s.execute(
        select(Enrollment.id).where(
            Enrollment.class_id == class_id,
            Enrollment.user_id == user_id,
            Enrollment.deleted_at.is_(None),
        )
    )
    return found.first() is not None


async def load_visible_class(s: AsyncSession, actor: Principal, class_id: str) -> Class:
    """A class the actor may see: admin any of the org, teacher their own (else 403),
    student one they are enrolled in (else 404); another org's -> 404."""
    klass = await _org_row(s, Class, actor.org_id, class_id, "class")
    if actor.role == Role.admin:
        return klass
    if actor.role == Role.teacher:
        if klass.teacher_id != actor.user_id:
            raise forbidden("this class belongs to another teacher", "not_your_class")
        return klass
    if not await _is_enrolled(s, klass.id, actor.user_id):
        raise not_found("class")
    return klass


async def load_visible_session(s: AsyncSession, actor: Principal, session_id: str) -> Session:
    row = await _org_row(s, Session, actor.org_id, session_id, "session")
    try:
        await load_visible_class(s, actor, row.class_id)
    except AppError as err:
        if err.status == 404:
            raise not_found("session") from err
        raise
    return row


async def session_view(s: AsyncSession, row: Session) -> SessionView:
    return (await session_views(s, [row]))[0]


async def session_views(s: AsyncSession, rows: Sequence[Session]) -> list[SessionView]:
    """Views of `rows` with their lesson plans (one query for all plans, however many)."""
    plans: dict[str, list[Lesson]] = {row.id: [] for row in rows}
    if rows:
        found = await s.execute(
            select(SessionLesson.session_id, Lesson)
            .join(Lesson, SessionLesson.lesson_id == Lesson.id)
            .where(
                SessionLesson.session_id.in_(list(plans)),
                SessionLesson.deleted_at.is_(None),
            )
            .order_by(SessionLesson.session_id, SessionLesson.position)
        )
        for session_id, lesson in found:
            plans[session_id].append(lesson)
    views = []
    for row in rows:
        # The state's lesson is normally in the plan (already loaded); else state_of loads it.
        views.append(
            SessionView(
                id=row.id,
                class_id=row.class_id,
                title=row.title,
                scheduled_start_at=row.scheduled_start_at,
                scheduled_end_at=row.scheduled_end_at,
                auto_start=row.auto_start,
                lessons=[lesson_ref(lesson) for lesson in plans[row.id]],
                state=await state_of(s, row),
            )
        )
    return views


async def _org_lessons(s: AsyncSession, org_id: str, lesson_ids: Sequence[str]) -> list[Lesson]:
    if len(set(lesson_ids)) != len(lesson_ids):
        raise AppError(
            422,
            "validation_error",
            "a lesson appears twice",
            detail={"path": "$.lesson_ids"},
        )
    return [await _org_row(s, Lesson, org_id, lid, "lesson") for lid in lesson_ids]


async def _queue_for_org_server(s: AsyncSession, row: Session) -> None:
    """The session and its lesson plan travel to the org server with the same commit."""
    links = await s.execute(select(SessionLesson).where(SessionLesson.session_id == row.id))
    await enqueue_rows(s, [row, *links.scalars()])


async def create_session(
    db: Database, actor: Principal, new: NewSession, *, now: datetime
) -> SessionView:
    """A new idle session of a class the actor teaches (admins: any class of the org)."""
    start = _aware(new.scheduled_start_at, "$.scheduled_start_at")
    end = _aware(new.scheduled_end_at, "$.scheduled_end_at")
    _check_schedule(start, end, new.auto_start)
    async with db.write() as s:
        klass = await _org_row(s, Class, actor.org_id, new.class_id, "class")
        if actor.role != Role.admin and klass.teacher_id != actor.user_id:
            raise forbidden("this class belongs to another teacher", "not_your_class")
        lessons = await _org_lessons(s, actor.org_id, new.lesson_ids)
        row = Session(
            org_id=actor.org_id,
            class_id=klass.id,
            title=new.title if new.title is not None else (lessons[0].title if lessons else ""),
            created_by=actor.user_id,
            scheduled_start_at=start,
            scheduled_end_at=end,
            auto_start=new.auto_start,
            status=SessionStatus.idle,
            rev=0,
            anchor_server_ms=0,
            anchor_position_ms=0,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        await s.flush()
        for position, lesson in enumerate(lessons):
            s.add(
                SessionLesson(
                    org_id=actor.org_id, session_id=row.id, lesson_id=lesson.id, position=position
                )
            )
        await s.flush()
        await _queue_for_org_server(s, row)
        return await session_view(s, row)


async def add_lesson(
    db: Database, actor: Principal, session_id: str, lesson_id: str
) -> SessionView:
    """Append a lesson to the session's plan (already there: unchanged)."""
    async with db.write() as s:
        row = await load_controlled_session(s, actor, session_id)
        lesson = await _org_row(s, Lesson, actor.org_id, lesson_id, "lesson")
        links = list(
            (
                await s.execute(select(SessionLesson).where(SessionLesson.session_id == row.id))
            ).scalars()
        )
        live = [link for link in links if link.deleted_at is None]
        existing = next((link for link in links if link.lesson_id == lesson.id), None)
        if existing is None or existing.deleted_at is not None:
            if len(live) >= MAX_SESSION_LESSONS:
                raise conflict("too_many_lessons", f"a session holds {MAX_SESSION_LESSONS} lessons")
            position = max((link.position for link in live), default=-1) + 1
            if existing is None:
                s.add(
                    SessionLesson(
                        org_id=row.org_id,
                        session_id=row.id,
                        lesson_id=lesson.id,
                        position=position,
                    )
                )
            else:
                existing.deleted_at = None
                existing.position = position
            await s.flush()
        await _queue_for_org_server(s, row)
        return await session_view(s, row)


async def remove_lesson(
    db: Database, actor: Principal, session_id: str, lesson_id: str, *, now: datetime
) -> SessionView:
    """Take a lesson out of the plan (not the one the session is on while it runs)."""
    async with db.write() as s:
        row = await load_controlled_session(s, actor, session_id)
        link = (
            await s.execute(
                select(SessionLesson).where(
                    SessionLesson.session_id == row.id,
                    SessionLesson.lesson_id == lesson_id,
                    SessionLesson.deleted_at.is_(None),
                )
            )
        ).scalar_one_or_none()
        if link is None:
            raise not_found("lesson in this session")
        live = row.status in (SessionStatus.playing, SessionStatus.paused)
        if live and row.lesson_id == lesson_id:
            raise conflict("lesson_in_use", "stop the session or launch another lesson first")
        link.deleted_at = now
        await s.flush()
        await _queue_for_org_server(s, row)
        return await session_view(s, row)


async def reorder_lessons(
    db: Database, actor: Principal, session_id: str, lesson_ids: Sequence[str]
) -> SessionView:
    """Put the session's lessons in the given order (exactly the lessons it holds)."""
    async with db.write() as s:
        row = await load_controlled_session(s, actor, session_id)
        links = list(
            (
                await s.execute(
                    select(SessionLesson).where(
                        SessionLesson.session_id == row.id, SessionLesson.deleted_at.is_(None)
                    )
                )
            ).scalars()
        )
        by_lesson = {link.lesson_id: link for link in links}
        if len(lesson_ids) != len(set(lesson_ids)) or set(lesson_ids) != set(by_lesson):
            raise AppError(
                422,
                "validation_error",
                "lesson_ids must list each lesson of the session exactly once",
                detail={"path": "$.lesson_ids"},
            )
        for position, lid in enumerate(lesson_ids):
            by_lesson[lid].position = position
        await s.flush()
        await _queue_for_org_server(s, row)
        return await session_view(s, row)


async def update_session(
    db: Database, actor: Principal, session_id: str, patch: SessionPatch
) -> SessionView:
    """Change title, schedule or auto_start of a session."""
    async with db.write() as s:
        row = await load_controlled_session(s, actor, session_id)
        if not isinstance(patch.title, msgspec.UnsetType):
            row.title = patch.title
        if not isinstance(patch.scheduled_start_at, msgspec.UnsetType):
            row.scheduled_start_at = _aware(patch.scheduled_start_at, "$.scheduled_start_at")
        if not isinstance(patch.scheduled_end_at, msgspec.UnsetType):
            row.scheduled_end_at = _aware(patch.scheduled_end_at, "$.scheduled_end_at")
        if not isinstance(patch.auto_start, msgspec.UnsetType):
            row.auto_start = patch.auto_start
        _check_schedule(row.scheduled_start_at, row.scheduled_end_at, row.auto_start)
        await s.flush()
        await _queue_for_org_server(s, row)
        return await session_view(s, row)


async def get_session(db: Database, actor: Principal, session_id: str) -> SessionView:
    async with db.read() as s:
        return await session_view(s, await load_visible_session(s, actor, session_id))


def _cursor_time(value: str | int) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise AppError(422, "bad_cursor", "cursor is not one this list handed out")
    return parsed


def _start_key() -> ColumnElement[datetime]:
    return func.coalesce(Session.scheduled_start_at, Session.created_at)


async def list_sessions(
    db: Database, actor: Principal, query: SessionFilter, *, now: datetime
) -> tuple[list[SessionView], str | None]:
    """The sessions the actor may see, by (scheduled) start time: teachers their classes',
    students their enrolled classes', admins the org's."""
    start_from = _aware(query.from_, "from")
    start_to = _aware(query.to, "to")
    async with db.read() as s:
        stmt = select(Session).where(Session.org_id == actor.org_id, Session.deleted_at.is_(None))
        if query.class_id is not None:
            klass = await load_visible_class(s, actor, query.class_id)
            stmt = stmt.where(Session.class_id == klass.id)
        elif actor.role == Role.teacher:
            stmt = stmt.where(
                Session.class_id.in_(select(Class.id).where(Class.teacher_id == actor.user_id))
            )
        elif actor.role == Role.student:
            stmt = stmt.where(
                Session.class_id.in_(
                    select(Enrollment.class_id).where(
                        Enrollment.user_id == actor.user_id, Enrollment.deleted_at.is_(None)
                    )
                )
            )
        key = _start_key()
        if start_from is not None:
            stmt = stmt.where(key >= start_from)
        if start_to is not None:
            stmt = stmt.where(key < start_to)
        if query.upcoming:
            stmt = stmt.where(
                Session.scheduled_start_at.is_not(None),
                Session.status != SessionStatus.stopped,
                func.coalesce(Session.scheduled_end_at, Session.scheduled_start_at) >= now,
            )
        after = decode_cursor(query.cursor, 2)
        if after is not None:
            stmt = stmt.where(tuple_(key, Session.id) > tuple_(_cursor_time(after[0]), after[1]))
        rows = list(
            (await s.execute(stmt.order_by(key, Session.id).limit(query.limit + 1))).scalars()
        )
        next_cursor = None
        if len(rows) > query.limit:
            rows = rows[: query.limit]
            last = rows[-1]
            started = last.scheduled_start_at or last.created_at
            next_cursor = encode_cursor(started.isoformat(), last.id)
        return await session_views(s, rows), next_cursor


async def class_timetable(
    db: Database, actor: Principal, class_id: str
) -> tuple[Class, list[SessionView]]:
    """A class and its scheduled sessions (for the iCalendar feed)."""
    async with db.read() as s:
        klass = await load_visible_class(s, actor, class_id)
        rows = (
            await s.execute(
                select(Session)
                .where(
                    Session.class_id == klass.id,
                    Session.deleted_at.is_(None),
                    Session.scheduled_start_at.is_not(None),
                )
                .order_by(Session.scheduled_start_at, Session.id)
            )
        ).scalars()
        return klass, await session_views(s, list(rows))


# --- auto start --------------------------------------------------------------------------------


async def due_auto_starts(db: Database, *, now: datetime, grace_s: int) -> list[str]:
    """Ids of idle auto_start sessions whose start time has come and whose window is open
    (until scheduled_end_at, or `grace_s` after the start when there is no end)."""
    async with db.read() as s:
        rows = (
            await s.execute(
                select(Session).where(
                    Session.auto_start.is_(True),
                    Session.status == SessionStatus.idle,
                    Session.deleted_at.is_(None),
                    Session.scheduled_start_at.is_not(None),
                    Session.scheduled_start_at <= now,
                )
            )
        ).scalars()
        due = []
        for row in rows:
            assert row.scheduled_start_at is not None
            closes = row.scheduled_end_at or row.scheduled_start_at + timedelta(seconds=grace_s)
            if closes > now:
                due.append(row.id)
        return due


async def auto_start(
    db: Database, clock: ServerClock, broadcast: StateBroadcast, session_id: str, *, grace_s: int
) -> SessionState | None:
    """Start one due auto_start session as the box itself (no actor); None if it is no longer
    due (a teacher started it, or changed its schedule, meanwhile)."""
    now = clock.now()

    def check(conn: sqlite3.Connection, record: SessionRecord | None) -> SessionRecord:
        row = SESSIONS.get(conn, session_id)
        if record is None or row is None or row.deleted_at is not None:
            raise not_found("session")
        start = row.scheduled_start_at
        closes = row.scheduled_end_at or (start + timedelta(seconds=grace_s) if start else None)
        due = (
            row.auto_start
            and row.status == SessionStatus.idle
            and start is not None
            and closes is not None
            and start <= now < closes
        )
        if not due:
            raise conflict("not_due", "session is no longer due to start")
        return record

    try:
        _, state = await _commit_change(
            db, clock, broadcast, session_id, Change(action=Action.play), check, None
        )
        return state
    except AppError as err:
        if err.code in ("not_due", "not_found"):
            return None
        raise
