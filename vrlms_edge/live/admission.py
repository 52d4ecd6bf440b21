"""Admitting a WebSocket peer: whose token it is, whether its headset may connect, and what it
follows (classes, the rosters staff see, the sessions' states).

All of it is read in one snapshot, as one call on the read lane (store/db.py `read_raw`): a
Wi-Fi blip reconnects a whole class at once, and through the ORM each of these statements cost
most of a millisecond of the event loop's CPU.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from vrlms_edge.domain.devices import device_admission
from vrlms_edge.domain.principal import Principal
from vrlms_edge.domain.sessions import (
    SESSIONS,
    LessonRef,
    SessionState,
    lesson_ref_raw,
    state_from,
)
from vrlms_edge.domain.tokens import principal_of, token_hash
from vrlms_edge.errors import AppError
from vrlms_edge.live.hub import Membership, RosterEntry
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import AuthToken, Device, Role, SessionStatus, User
from vrlms_edge.store.raw import RawTable

# Sessions whose state a teacher's connection gets after `welcome`: the newest ones of their
# classes (a class accumulates old sessions; the dashboard pages through the rest via REST).
MAX_TEACHER_SESSIONS: Final = 50
# Longer than any token we issue: refused without a lookup.
MAX_TOKEN_LENGTH: Final = 256

_TOKENS: Final = RawTable(AuthToken)
_USERS: Final = RawTable(User)
_DEVICES: Final = RawTable(Device)


@dataclass(frozen=True, slots=True)
class Admitted:
    principal: Principal
    device: Device | None
    membership: Membership


@dataclass(frozen=True, slots=True)
class Refused:
    unauthorized: bool  # no valid token (else: a valid token whose headset may not connect)
    reason: str


async def admit(db: Database, token: str | None, *, now: datetime) -> Admitted | Refused:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return Refused(True, "missing or invalid token")
    digest = token_hash(token)
    return await db.read_raw(lambda conn: _admit(conn, digest, now))


def _admit(conn: sqlite3.Connection, digest: str, now: datetime) -> Admitted | Refused:
    tokens = _TOKENS.where(conn, "token_hash = ?", (digest,))
    user = _USERS.get(conn, tokens[0].user_id) if tokens else None
    principal = principal_of(tokens[0], user, now=now) if tokens and user else None
    if principal is None:
        return Refused(True, "missing or invalid token")
    device = None
    if principal.device_pk is not None:
        device = _DEVICES.get(conn, principal.device_pk)
        if device is None or device.deleted_at is not None or device.org_id != principal.org_id:
            return Refused(False, "unknown device")
        try:
            device_admission(device, principal.user_id)  # the same rule as login
        except AppError as refused:
            return Refused(False, refused.code)
    return Admitted(principal, device, _membership(conn, principal))


_STUDENT_CLASSES: Final = (
    "SELECT c.id FROM classes c JOIN enrollments e ON e.class_id = c.id"
    " WHERE e.user_id = ? AND e.deleted_at IS NULL AND c.deleted_at IS NULL AND c.org_id = ?"
)
_TEACHER_CLASSES: Final = (
    "SELECT id FROM classes WHERE teacher_id = ? AND deleted_at IS NULL AND org_id = ?"
)
_ORG_CLASSES: Final = "SELECT id FROM classes WHERE org_id = ? AND deleted_at IS NULL"
_ROSTER: Final = (
    "SELECT e.class_id, u.id, u.nickname, u.display_name FROM enrollments e"
    " JOIN users u ON u.id = e.user_id WHERE e.class_id IN ({marks})"
    " AND e.deleted_at IS NULL AND u.deleted_at IS NULL AND u.role = ?"
)


def _membership(conn: sqlite3.Connection, principal: Principal) -> Membership:
    if principal.role == Role.student:
        found = conn.execute(_STUDENT_CLASSES, (principal.user_id, principal.org_id))
    elif principal.role == Role.teacher:
        found = conn.execute(_TEACHER_CLASSES, (principal.user_id, principal.org_id))
    else:
        found = conn.execute(_ORG_CLASSES, (principal.org_id,))
    class_ids = frozenset(class_id for (class_id,) in found)
    roster: dict[str, list[RosterEntry]] = {}
    states: list[tuple[str, SessionState]] = []
    if class_ids:
        ids = list(class_ids)
        marks = ", ".join("?" for _ in ids)
        if principal.role != Role.student:
            sql = _ROSTER.format(marks=marks)
            for class_id, user_id, nickname, name in conn.execute(sql, [*ids, Role.student]):
                roster.setdefault(class_id, []).append(RosterEntry(user_id, nickname, name))
        where = f"class_id IN ({marks}) AND deleted_at IS NULL"
        params: list[str] = ids
        if principal.role == Role.student:  # students follow live sessions only
            where += " AND status IN (?, ?) ORDER BY updated_at DESC"
            params = [*ids, SessionStatus.playing, SessionStatus.paused]
        else:
            where += f" ORDER BY updated_at DESC LIMIT {MAX_TEACHER_SESSIONS}"
        lessons: dict[str, LessonRef | None] = {}
        for row in SESSIONS.where(conn, where, params):
            lesson_id = row.lesson_id
            if lesson_id is not None and lesson_id not in lessons:
                lessons[lesson_id] = lesson_ref_raw(conn, lesson_id)
            lesson = lessons.get(lesson_id) if lesson_id is not None else None
            states.append((row.class_id, state_from(row, lesson)))
    return Membership(org_id=principal.org_id, class_ids=class_ids, roster=roster, states=states)
