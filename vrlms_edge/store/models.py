"""The whole data model of the box and the org server (one schema, two engines).

Every client-visible object has a UUID string id, created_at/updated_at and, on tenant
tables, org_id. Tables that sync between box and org server carry a `deleted_at` tombstone
so deletions can travel as data.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Stamped:
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Tenant(Stamped):
    """A row that belongs to one org and may travel between box and org server."""

    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class Role(enum.StrEnum):
    admin = "admin"
    teacher = "teacher"
    student = "student"


class DeviceStatus(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    blocked = "blocked"


class SessionStatus(enum.StrEnum):
    idle = "idle"
    playing = "playing"
    paused = "paused"
    stopped = "stopped"


class ResultStatus(enum.StrEnum):
    not_started = "not_started"
    in_progress = "in_progress"
    completed = "completed"


def _enum(e: type[enum.StrEnum]) -> String:
    return String(max(len(m.value) for m in e) + 4)


# --- tenants and people -------------------------------------------------------------------


class Org(Stamped, Base):
    __tablename__ = "orgs"
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class User(Tenant, Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("org_id", "nickname"),)
    role: Mapped[str] = mapped_column(_enum(Role))
    nickname: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))
    pin_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class Device(Tenant, Base):
    """A headset, known by the device_id string its app reports."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("org_id", "device_id"),)
    device_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200), default="")
    model: Mapped[str] = mapped_column(String(128), default="")
    app_version: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(_enum(DeviceStatus), default=DeviceStatus.pending)
    bound_user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True
    )
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)


# --- catalog ------------------------------------------------------------------------------


class Course(Tenant, Base):
    __tablename__ = "courses"
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)


class Module(Tenant, Base):
    __tablename__ = "modules"
    course_id: Mapped[str] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer, default=0)


class Lesson(Tenant, Base):
    __tablename__ = "lessons"
    module_id: Mapped[str] = mapped_column(ForeignKey("modules.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    apk_package: Mapped[str] = mapped_column(String(200))
    # Launch parameters handed to the lesson app (scene, language, difficulty...).
    launch: Mapped[dict[str, Any]] = mapped_column(default=dict)
    duration_s: Mapped[int | None] = mapped_column(Integer, default=None)
    position: Mapped[int] = mapped_column(Integer, default=0)


# --- classes and sessions -----------------------------------------------------------------


class Class(Tenant, Base):
    __tablename__ = "classes"
    name: Mapped[str] = mapped_column(String(200))
    teacher_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True
    )


class Enrollment(Tenant, Base):
    __tablename__ = "enrollments"
    __table_args__ = (UniqueConstraint("class_id", "user_id"),)
    class_id: Mapped[str] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


class Session(Tenant, Base):
    """A class's lesson session and its current state (one revision per change)."""

    __tablename__ = "sessions"
    class_id: Mapped[str] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    scheduled_start_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    scheduled_end_at: Mapped[datetime | None] = mapped_column(default=None)
    auto_start: Mapped[bool] = mapped_column(Boolean, default=False)
    # State (PROTOCOL.md "state" message).
    status: Mapped[str] = mapped_column(_enum(SessionStatus), default=SessionStatus.idle)
    lesson_id: Mapped[str | None] = mapped_column(
        ForeignKey("lessons.id", ondelete="SET NULL"), default=None
    )
    anchor_server_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    anchor_position_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    attention_on: Mapped[bool] = mapped_column(Boolean, default=False)
    attention_message: Mapped[str | None] = mapped_column(String(500), default=None)
    rev: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)


class SessionLesson(Tenant, Base):
    __tablename__ = "session_lessons"
    __table_args__ = (UniqueConstraint("session_id", "lesson_id"),)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    lesson_id: Mapped[str] = mapped_column(ForeignKey("lessons.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)


class SessionRevision(Tenant, Base):
    """State history: one row per rev; the unique key makes a duplicated rev impossible."""

    __tablename__ = "session_revisions"
    __table_args__ = (UniqueConstraint("session_id", "rev"),)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    rev: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str | None] = mapped_column(String(36), default=None)
    status: Mapped[str] = mapped_column(_enum(SessionStatus))
    lesson_id: Mapped[str | None] = mapped_column(String(36), default=None)
    anchor_server_ms: Mapped[int] = mapped_column(BigInteger)
    anchor_position_ms: Mapped[int] = mapped_column(BigInteger)
    attention_on: Mapped[bool] = mapped_column(Boolean)
    attention_message: Mapped[str | None] = mapped_column(String(500), default=None)


class Attendance(Tenant, Base):
    __tablename__ = "attendance"
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), default=None
    )
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    left_at: Mapped[datetime | None] = mapped_column(default=None)


# --- tracking and results -----------------------------------------------------------------


class InteractionEvent(Tenant, Base):
    """One headset event; (device, stream, seq) is unique so a resend is stored once."""

    __tablename__ = "interaction_events"
    # Every index costs each stored event a B-tree insert, and one keyed by headset or user
    # dirties a page per headset in every batch. Kept: the unique key (dedupe, stream heads,
    # device cascade), (session, kind) (session analytics and summaries) and received_ms
    # (export order, retention; it grows with time, so new rows append). No index on org_id
    # (a box serves one org: it selects nothing) nor user_id (a student's export walks
    # received_ms instead; it cost the writer ~4 us per event at 300 headsets).
    __table_args__ = (
        UniqueConstraint("device_id", "stream", "seq"),
        Index("ix_interaction_events_session_kind", "session_id", "kind"),
        Index("ix_interaction_events_received_ms", "received_ms"),
    )
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(36), default=None)
    session_id: Mapped[str | None] = mapped_column(String(36), default=None)
    lesson_id: Mapped[str | None] = mapped_column(String(36), default=None)
    stream: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    t_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class EventStream(Base):
    """Highest contiguous durable seq per (device, stream): the `event_ack` M."""

    __tablename__ = "event_streams"
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    acked_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Result(Tenant, Base):
    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("user_id", "lesson_id", "session_id"),)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    lesson_id: Mapped[str] = mapped_column(ForeignKey("lessons.id", ondelete="CASCADE"))
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), default=None, index=True
    )
    status: Mapped[str] = mapped_column(_enum(ResultStatus), default=ResultStatus.not_started)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    score: Mapped[float | None] = mapped_column(Float, default=None)
    time_spent_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    # Headset time of the newest event counted into time_spent_ms (gaps add up from here).
    last_event_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)


class EventSummary(Tenant, Base):
    """What one student did in one session (and lesson), counted from the raw events: the part
    of the event log that travels to the org server. The id is derived from (session, user,
    lesson) so counting more events updates the same row (domain/event_summaries.py)."""

    __tablename__ = "event_summaries"
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Null: events without a lesson, or naming a lesson this box does not know.
    lesson_id: Mapped[str | None] = mapped_column(
        ForeignKey("lessons.id", ondelete="CASCADE"), default=None
    )
    events: Mapped[int] = mapped_column(Integer, default=0)
    gaze: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    actions: Mapped[int] = mapped_column(Integer, default=0)
    progress_events: Mapped[int] = mapped_column(Integer, default=0)
    result_events: Mapped[int] = mapped_column(Integer, default=0)
    other_events: Mapped[int] = mapped_column(Integer, default=0)
    # Event times (`t_ms`, server-time estimates sent by the headset) of the first and last.
    first_event_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    last_event_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    # `data.progress` of the newest progress event and `data.score` of the newest result
    # event that carried one, with those events' `t_ms` (null when none did).
    last_progress: Mapped[float | None] = mapped_column(Float, default=None)
    last_progress_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_score: Mapped[float | None] = mapped_column(Float, default=None)
    last_score_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)


# --- auth ---------------------------------------------------------------------------------


class AuthToken(Tenant, Base):
    """A bearer token or dashboard cookie session; only its SHA-256 is stored."""

    __tablename__ = "auth_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), default=None
    )
    kind: Mapped[str] = mapped_column(String(16), default="bearer")  # bearer | web
    csrf_token: Mapped[str | None] = mapped_column(String(64), default=None)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginThrottle(Base):
    """Failure counts per account (scope 'account') and per client address ('address')."""

    __tablename__ = "login_throttles"
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- box identity and sync (box side) ------------------------------------------------------


class BoxIdentity(Stamped, Base):
    """This box: one row. The Ed25519 private key lives in a 0600 file in the data dir."""

    __tablename__ = "box_identity"
    name: Mapped[str] = mapped_column(String(63))
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    org_id: Mapped[str | None] = mapped_column(String(36), default=None)
    org_server_url: Mapped[str | None] = mapped_column(String(500), default=None)
    enrolled_at: Mapped[datetime | None] = mapped_column(default=None)


class OutboxEntry(Base):
    """What the box authored and the org server has not confirmed. One row per object:
    a newer change of the same object replaces the payload (the newest state is what counts)."""

    __tablename__ = "sync_outbox"
    __table_args__ = (UniqueConstraint("entity", "entity_id"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    # Bumped on every change so a confirmation of an older version does not clear a newer one.
    version: Mapped[int] = mapped_column(Integer, default=1)
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SyncState(Base):
    """Named sync values: pull cursor, current stage, last error, last success."""

    __tablename__ = "sync_state"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- org server side -----------------------------------------------------------------------


class Box(Tenant, Base):
    """A classroom box enrolled with the org server."""

    __tablename__ = "boxes"
    name: Mapped[str] = mapped_column(String(63))
    public_key: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    version: Mapped[str] = mapped_column(String(32), default="")
    last_sync_at: Mapped[datetime | None] = mapped_column(default=None)
    health: Mapped[dict[str, Any]] = mapped_column(default=dict)


class EnrollmentToken(Tenant, Base):
    __tablename__ = "enrollment_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    box_id: Mapped[str | None] = mapped_column(String(36), default=None)


class ChangeLog(Base):
    """Org-server change feed for pulls: the cursor is the highest seq a box has applied."""

    __tablename__ = "change_log"
    __table_args__ = (Index("ix_change_log_org_seq", "org_id", "seq"),)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(36))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncNonce(Base):
    """Recently seen request nonces per box (replay protection)."""

    __tablename__ = "sync_nonces"
    box_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class SyncReceipt(Base):
    """Org server: the highest version of each box-authored object it stores, so a late
    retry carrying an older version never overwrites a newer one."""

    __tablename__ = "sync_receipts"
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True)
    entity: Mapped[str] = mapped_column(String(32), primary_key=True)
    entity_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    box_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
