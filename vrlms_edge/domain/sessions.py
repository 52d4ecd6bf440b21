"""Lesson sessions: the state machine every teacher command goes through.

A session's state is a small record (status, lesson, time anchor, attention, rev). Every
change is one new rev: it is computed and stored in one write transaction (the session row and
a SessionRevision row whose unique (session_id, rev) key makes a duplicated rev impossible),
then handed to the one broadcast point, `StateBroadcast.publish`. REST endpoints and WebSocket
`command`s both call `change_state`; nothing else changes a session's state.

    create -> idle; start: idle|paused|stopped -> playing; pause: playing -> paused;
    stop: playing|paused -> stopped; launch/seek/attention keep the status (see below).
"""

from __future__ import annotations

import enum
from typing import Any, Literal, Protocol

import msgspec
from sqlalchemy import select

from vrlms_edge.domain.principal import Principal
from vrlms_edge.errors import AppError, conflict, forbidden, not_found
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    Class,
    Lesson,
    Role,
    Session,
    SessionLesson,
    SessionRevision,
    SessionStatus,
)
from vrlms_edge.sync.outbox import enqueue_row


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


def lesson_ref(lesson: Lesson) -> LessonRef:
    return LessonRef(
        id=lesson.id,
        title=lesson.title,
        apk_package=lesson.apk_package,
        launch=lesson.launch or {},
        duration_s=lesson.duration_s,
    )


def position_at(session: Session, now_ms: int) -> int:
    """Where the lesson is at server time now_ms (before the anchor: the anchor position)."""
    if session.status != SessionStatus.playing:
        return session.anchor_position_ms
    return session.anchor_position_ms + max(0, now_ms - session.anchor_server_ms)


async def load_controlled_session(db_session: Any, actor: Principal, session_id: str) -> Session:
    """The session if `actor` may control it: another org's -> 404, another teacher's -> 403."""
    row = await db_session.get(Session, session_id)
    if row is None or row.org_id != actor.org_id or row.deleted_at is not None:
        raise not_found("session")
    if actor.role == Role.admin:
        return row  # type: ignore[no-any-return]
    if actor.role != Role.teacher:
        raise forbidden()
    klass = await db_session.get(Class, row.class_id)
    if klass is None or klass.teacher_id != actor.user_id:
        raise forbidden("this session belongs to another teacher's class", "not_your_class")
    return row  # type: ignore[no-any-return]


async def session_lesson_ids(db_session: Any, session_id: str) -> list[str]:
    rows = await db_session.execute(
        select(SessionLesson.lesson_id)
        .where(SessionLesson.session_id == session_id, SessionLesson.deleted_at.is_(None))
        .order_by(SessionLesson.position)
    )
    return list(rows.scalars())


async def state_of(db_session: Any, row: Session) -> SessionState:
    lesson = await db_session.get(Lesson, row.lesson_id) if row.lesson_id else None
    return SessionState(
        session_id=row.id,
        rev=row.rev,
        status=SessionStatus(row.status).value,
        lesson=lesson_ref(lesson) if lesson is not None else None,
        anchor_server_ms=row.anchor_server_ms,
        anchor_position_ms=row.anchor_position_ms,
        attention=Attention(on=row.attention_on, message=row.attention_message),
    )


def _check_position(position_ms: int | None) -> None:
    if position_ms is not None and not 0 <= position_ms <= MAX_POSITION_MS:
        raise AppError(422, "validation_error", "position_ms out of range")


async def _pick_lesson(db_session: Any, row: Session, wanted: str | None) -> str:
    ids = await session_lesson_ids(db_session, row.id)
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


async def _apply(db_session: Any, row: Session, change: Change, now_ms: int, lead_ms: int) -> None:
    """Compute the next state into `row` (not yet persisted)."""
    status = SessionStatus(row.status)
    action = change.action
    _check_position(change.position_ms)
    if action == Action.play:
        if status == SessionStatus.playing:
            raise _invalid(action, status)
        lesson_id = await _pick_lesson(db_session, row, change.lesson_id)
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
        row.lesson_id = await _pick_lesson(db_session, row, change.lesson_id)
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
        row.attention_on = change.on
        row.attention_message = (change.message or None) if change.on else None


def _lead(change: Change, broadcast: StateBroadcast, session_id: str) -> int:
    if change.lead_ms is not None:
        if not 0 <= change.lead_ms <= MAX_LEAD_MS:
            raise AppError(422, "validation_error", f"lead_ms must be 0..{MAX_LEAD_MS}")
        return change.lead_ms
    return broadcast.lead_ms(session_id)


async def change_state(
    db: Database,
    clock: ServerClock,
    broadcast: StateBroadcast,
    actor: Principal,
    session_id: str,
    change: Change,
) -> SessionState:
    """Apply one teacher command: new rev, persisted, then published. Raises AppError."""
    lead_ms = _lead(change, broadcast, session_id)
    async with db.write() as s:
        row = await load_controlled_session(s, actor, session_id)
        if not db.is_sqlite:
            # Serialize concurrent commands on one session (SQLite: the write lock does it).
            await s.refresh(row, with_for_update=True)
        now_ms = clock.now_ms()
        await _apply(s, row, change, now_ms, lead_ms)
        row.rev += 1
        if row.status == SessionStatus.playing and row.started_at is None:
            row.started_at = clock.now()
        if row.status == SessionStatus.stopped:
            row.ended_at = clock.now()
        s.add(
            SessionRevision(
                org_id=row.org_id,
                session_id=row.id,
                rev=row.rev,
                action=change.action.value,
                actor_id=actor.user_id,
                status=row.status,
                lesson_id=row.lesson_id,
                anchor_server_ms=row.anchor_server_ms,
                anchor_position_ms=row.anchor_position_ms,
                attention_on=row.attention_on,
                attention_message=row.attention_message,
            )
        )
        # The org server gets the session's newest state with the same commit.
        await enqueue_row(s, row)
        state = await state_of(s, row)
        class_id, org_id = row.class_id, row.org_id
    broadcast.publish(org_id, class_id, state)
    return state
