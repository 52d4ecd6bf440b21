"""The live hub: rooms of connected headsets and teachers per class, the one broadcast path of
session states, and the live picture of each class (presence, acks, skew, RTT, status).

The hub implements `StateBroadcast` (domain/sessions.py): `change_state` persists a rev and
calls `publish`, which encodes the `state` once and offers the same bytes to every member's
send queue. The hub never awaits a connection; a watchdog task pings, measures, and closes
peers that are silent (CLOSE_SILENT) or cannot drain (CLOSE_TOO_SLOW). Teachers get `class`
pictures of their rooms at a bounded rate (CLASS_PICTURE_INTERVAL_S), coalesced newest-wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Final

from vrlms_edge.config import Settings
from vrlms_edge.domain.sessions import SessionState
from vrlms_edge.live.attendance import AttendanceLog
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.live.connection import Connection, wire_frame
from vrlms_edge.live.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_REPLACED,
    CLOSE_SILENT,
    CLOSE_TOO_SLOW,
    Ack,
    ClassPicture,
    Status,
    StudentLive,
    encode,
)
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Role

log = logging.getLogger(__name__)

# Watchdog period: resolution of stall/silence detection and of pings; cheap at 300 peers.
WATCH_INTERVAL_S: Final = 0.25
# RTT pings at least this often (more often than a long heartbeat), so that the start lead
# follows the room's current round trips; 300 headsets make 150 tiny frames per second. Each
# watchdog round pings its share of the connections only (the interval's worth over its
# rounds): a class that connected at once was pinged all in one round, and the loop's 10-20 ms
# of pings and then pongs at 300 headsets delayed whichever command came in between.
RTT_PING_INTERVAL_S: Final = 2.0
# Teachers get a class picture at most this often per class: presence and acks of 30
# headsets after a start arrive within a few hundred ms, one picture covers them.
CLASS_PICTURE_INTERVAL_S: Final = 0.5
# The start lead is this multiple of the room's p95 round trip: one trip for the state to
# arrive (half an RTT) with room for a retransmission and for jitter.
LEAD_RTT_FACTOR: Final = 3.0
LIVE_STATUSES: Final = frozenset({"playing", "paused"})
# A room's RTT p95 and the box's lag p99 are reused this long: round trips are sampled every
# RTT_PING_INTERVAL_S per connection, and sorting the 16,000 samples of 1000 headsets took 3 ms
# of every command; filtering and sorting the lags took 0.15 ms of every command at 30 headsets.
LEAD_TERMS_TTL_S: Final = 0.25
# A command takes terms up to this old as they are, and they are recomputed after its publish:
# a recompute inside the command delayed every fifth state of a 20 Hz train by 0.2-0.3 ms.
LEAD_TERMS_STALE_S: Final = 2.0
# Command-to-socket lags kept: the members of the last few commands in a class of 300.
LAG_SAMPLES: Final = 1024
# Only lags of the last minute count: a slow moment (a connection storm) must not keep every
# later start waiting.
LAG_WINDOW_S: Final = 60.0


@dataclass
class StudentEntry:
    user_id: str
    nickname: str
    display_name: str
    conn: Connection | None = None
    applied_rev: int | None = None
    applied_session: str | None = None
    skew_ms: int | None = None
    last_seen_ms: int | None = None
    status: Status | None = None
    frame_ms: int | None = None
    lesson_id: str | None = None
    progress: float | None = None
    target: str | None = None
    frame_rev: int = 0

    def live(self) -> StudentLive:
        conn = self.conn
        return StudentLive(
            user_id=self.user_id,
            nickname=self.nickname,
            display_name=self.display_name,
            online=conn is not None,
            device=conn.device_pk if conn is not None else None,
            applied_rev=self.applied_rev,
            skew_ms=self.skew_ms,
            rtt_ms=conn.rtt_ms if conn is not None else None,
            last_seen_ms=self.last_seen_ms,
            status=self.status,
            frame_ms=self.frame_ms,
            lesson_id=self.lesson_id,
            progress=self.progress,
            target=self.target,
            frame_rev=self.frame_rev,
        )


@dataclass
class Room:
    """Everyone following one class: its students' headsets and its teachers."""

    org_id: str
    class_id: str
    students: set[Connection] = field(default_factory=set)
    teachers: set[Connection] = field(default_factory=set)
    roster: dict[str, StudentEntry] = field(default_factory=dict)
    states: dict[str, SessionState] = field(default_factory=dict)
    # Open attendance rows: (session_id, connection id) -> Attendance.id
    attendance: dict[tuple[str, int], str] = field(default_factory=dict)
    # Bumped when `students` changes. A broadcast walks every student for attendance only
    # when this or the session's live/stopped category moved since its last walk: a train of
    # seeks to 1000 headsets would otherwise walk them all per command for nothing.
    students_version: int = 0
    attendance_walked: dict[str, tuple[int, bool, bool]] = field(default_factory=dict)
    dirty: bool = False
    last_picture: float = float("-inf")

    @property
    def members(self) -> set[Connection]:
        return self.students | self.teachers

    def current_state(self) -> SessionState | None:
        """The live session's state if there is one, else the newest known."""
        live = [s for s in self.states.values() if s.status in LIVE_STATUSES]
        pool = live or list(self.states.values())
        return max(pool, key=lambda s: s.anchor_server_ms, default=None)


@dataclass(frozen=True, slots=True)
class RosterEntry:
    user_id: str
    nickname: str
    display_name: str


@dataclass(frozen=True, slots=True)
class Membership:
    """What a new connection belongs to, read from the database by the endpoint."""

    org_id: str
    class_ids: frozenset[str]
    roster: dict[str, list[RosterEntry]]  # class_id -> students known to the room
    states: list[tuple[str, SessionState]]  # (class_id, state) of the classes' sessions


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


class Hub:
    def __init__(self, settings: Settings, clock: ServerClock) -> None:
        self._settings = settings
        self._clock = clock
        self._rooms: dict[str, Room] = {}
        self._session_class: dict[str, str] = {}
        self._by_device: dict[str, Connection] = {}
        self._frames: dict[str, tuple[int, bytes]] = {}
        # When a command asked for a lead, per session; and how long, from that moment, each
        # member's state took to reach its socket (the box's own share of a start's delay).
        self._lead_asked: dict[str, float] = {}
        self.send_lags_s: deque[tuple[float, float]] = deque(maxlen=LAG_SAMPLES)  # (at, lag)
        # ("rtt", class_id) or "lag" -> (computed at, seconds, how): see _lead_term
        self._lead_terms: dict[Hashable, tuple[float, float, Callable[[float], float]]] = {}
        self._lead_refresh_due = False
        self.connections: set[Connection] = set()
        self.attendance: AttendanceLog | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.closed_too_slow = 0
        self.closed_silent = 0

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, db: Database) -> None:
        self.attendance = AttendanceLog(db, self._clock)
        self.attendance.start()
        self._watchdog = asyncio.create_task(self._watch(), name="live-hub-watchdog")

    async def close_all(self) -> None:
        """Shutdown: every peer gets CLOSE_GOING_AWAY (and reconnects to the next box run)."""
        conns = list(self.connections)
        for conn in conns:
            conn.close(CLOSE_GOING_AWAY, "box shutting down")
        await asyncio.gather(*(c.finished() for c in conns), return_exceptions=True)

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.close_all()
        if self.attendance is not None:
            await self.attendance.stop()

    # --- StateBroadcast ---------------------------------------------------------------------

    def lead_ms(self, session_id: str) -> int:
        """The start lead for a command on `session_id` about to be applied (StateBroadcast);
        the box's own lag is measured from this call to each member's send (see publish)."""
        self._lead_asked[session_id] = self._clock.monotonic()
        return self.current_lead_ms(session_id, max_age_s=LEAD_TERMS_STALE_S)

    def current_lead_ms(self, session_id: str, max_age_s: float = LEAD_TERMS_TTL_S) -> int:
        """clamp(LEAD_RTT_FACTOR x p95 round trip of the session's room + p99 of the box's
        recent command-to-socket lag, floor, cap). A session no member has seen yet is sized by
        every connection of the box. The lag term keeps starts on time when the box itself is
        slow (a busy CPU, a large room), which no round trip shows."""
        floor = self._settings.start_lead_floor_ms
        cap = self._settings.start_lead_max_ms
        class_id = self._session_class.get(session_id, "")
        rtt_part = LEAD_RTT_FACTOR * self._rtt_p95_s(class_id, max_age_s)
        lead = math.ceil((rtt_part + self._lag_p99_s(max_age_s)) * 1000.0)
        return max(floor, min(cap, lead))

    def _lag_p99_s(self, max_age_s: float) -> float:
        """p99 of the box's command-to-socket lags of the last LAG_WINDOW_S."""

        def compute(now: float) -> float:
            lags = [lag for at, lag in self.send_lags_s if at >= now - LAG_WINDOW_S]
            return percentile(lags, 0.99) if lags else 0.0

        return self._lead_term("lag", compute, max_age_s)

    def _rtt_p95_s(self, class_id: str, max_age_s: float) -> float:
        """p95 of the round trips of a class's members (all connections for a class nobody
        follows)."""

        def compute(now: float) -> float:
            room = self._rooms.get(class_id)
            conns: Iterable[Connection] = room.members if room is not None else self.connections
            samples = [rtt for conn in conns for rtt in conn.rtt_s]
            return percentile(samples, 0.95) if samples else 0.0

        return self._lead_term(("rtt", class_id), compute, max_age_s)

    def _lead_term(
        self, key: Hashable, compute: Callable[[float], float], max_age_s: float
    ) -> float:
        """`compute(now)`, reused up to `max_age_s`; one older than LEAD_TERMS_TTL_S is
        recomputed after the next publish."""
        now = self._clock.monotonic()
        cached = self._lead_terms.get(key)
        if cached is not None and now - cached[0] < max_age_s:
            self._lead_refresh_due |= now - cached[0] >= LEAD_TERMS_TTL_S
            return cached[1]
        value = compute(now)
        self._lead_terms[key] = (now, value, compute)
        return value

    def _refresh_lead_terms(self) -> None:
        now = self._clock.monotonic()
        for key, (at, _, compute) in list(self._lead_terms.items()):
            if now - at >= LEAD_TERMS_TTL_S:
                self._lead_terms[key] = (now, compute(now), compute)

    def publish(self, org_id: str, class_id: str, state: SessionState) -> None:
        room = self._room(org_id, class_id)
        self._session_class[state.session_id] = class_id
        known = room.states.get(state.session_id)
        if known is not None and known.rev > state.rev:
            return  # an older rev arriving late changes nothing
        room.states[state.session_id] = state
        frame = encode(state)  # once, for every member
        asked = self._lead_asked.pop(state.session_id, None)
        on_sent = None
        cap_s = self._settings.start_lead_max_ms / 1000.0
        if asked is not None and self._clock.monotonic() - asked <= cap_s:
            # (an older `asked`, left by a refused command, would measure nothing real)
            lags = self.send_lags_s

            def on_sent(sent_at: float) -> None:
                lags.append((sent_at, sent_at - asked))

        wire = wire_frame(frame)
        for conn in room.students:
            conn.session_id = state.session_id
            conn.offer_state(state.session_id, state.rev, frame, on_sent, wire)
        for conn in room.teachers:
            conn.offer_state(state.session_id, state.rev, frame, on_sent, wire)
        self._track_attendance(room, state)
        room.dirty = True
        if self._lead_refresh_due:  # after this command's task step, not inside it
            self._lead_refresh_due = False
            asyncio.get_running_loop().call_soon(self._refresh_lead_terms)

    # --- membership -------------------------------------------------------------------------

    def _room(self, org_id: str, class_id: str) -> Room:
        room = self._rooms.get(class_id)
        if room is None:
            room = self._rooms[class_id] = Room(org_id=org_id, class_id=class_id)
        return room

    def join(self, conn: Connection, membership: Membership) -> None:
        """Add a connection to its rooms; a previous connection of its device is replaced."""
        if conn.device_pk is not None:
            old = self._by_device.get(conn.device_pk)
            if old is not None and old is not conn:
                old.close(CLOSE_REPLACED, "replaced by a newer connection of this device")
                self._leave_rooms(old)
            self._by_device[conn.device_pk] = conn
        self.connections.add(conn)
        conn.class_ids = membership.class_ids
        is_student = conn.principal.role == Role.student
        for class_id in membership.class_ids:
            room = self._room(membership.org_id, class_id)
            for entry in membership.roster.get(class_id, []):
                room.roster.setdefault(
                    entry.user_id, StudentEntry(entry.user_id, entry.nickname, entry.display_name)
                )
            if is_student:
                room.students.add(conn)
                room.students_version += 1
                student = room.roster.setdefault(
                    conn.principal.user_id,
                    StudentEntry(
                        conn.principal.user_id,
                        conn.principal.nickname,
                        conn.principal.display_name,
                    ),
                )
                student.conn = conn
                student.last_seen_ms = self._clock.now_ms()
            else:
                room.teachers.add(conn)
            room.dirty = True
        for class_id, state in membership.states:
            self._session_class[state.session_id] = class_id
            room = self._room(membership.org_id, class_id)
            known = room.states.get(state.session_id)
            if known is None or known.rev < state.rev:
                room.states[state.session_id] = state
        if is_student:
            for class_id in membership.class_ids:
                room = self._rooms[class_id]
                current = room.current_state()
                if current is not None:
                    self._track_attendance(room, current, only=conn)
        if conn.device_pk is not None and self.attendance is not None:
            self.attendance.seen(conn.device_pk)

    def leave(self, conn: Connection) -> None:
        """Remove a connection (idempotent: the watchdog and the endpoint may both call it)."""
        self.connections.discard(conn)
        if conn.device_pk is not None and self._by_device.get(conn.device_pk) is conn:
            del self._by_device[conn.device_pk]
            if self.attendance is not None:
                self.attendance.seen(conn.device_pk)
        self._leave_rooms(conn)

    def _leave_rooms(self, conn: Connection) -> None:
        for class_id in conn.class_ids:
            room = self._rooms.get(class_id)
            if room is None:
                continue
            room.teachers.discard(conn)
            if conn in room.students:
                room.students.discard(conn)
                room.students_version += 1
                student = room.roster.get(conn.principal.user_id)
                if student is not None and student.conn is conn:
                    student.conn = None
                    student.last_seen_ms = self._clock.now_ms()
                for key in [k for k in room.attendance if k[1] == conn.id]:
                    row_id = room.attendance.pop(key)
                    if self.attendance is not None:
                        self.attendance.leave(row_id)
            room.dirty = True

    def _track_attendance(
        self, room: Room, state: SessionState, only: Connection | None = None
    ) -> None:
        """Open a row for each student present while the session is live; close at stop."""
        log_ = self.attendance
        if log_ is None:
            return
        live, stopped = state.status in LIVE_STATUSES, state.status == "stopped"
        if only is None:
            walk = (room.students_version, live, stopped)
            if room.attendance_walked.get(state.session_id) == walk:
                return  # the same students, the same category: this walk would change nothing
            room.attendance_walked[state.session_id] = walk
        for conn in [only] if only is not None else list(room.students):
            key = (state.session_id, conn.id)
            if live and key not in room.attendance:
                room.attendance[key] = log_.join(
                    room.org_id, state.session_id, conn.principal.user_id, conn.device_pk
                )
            elif stopped and key in room.attendance:
                log_.leave(room.attendance.pop(key))

    # --- what headsets report ---------------------------------------------------------------

    def _entries(self, conn: Connection) -> list[tuple[Room, StudentEntry]]:
        found = []
        for class_id in conn.class_ids:
            room = self._rooms.get(class_id)
            if room is not None:
                entry = room.roster.get(conn.principal.user_id)
                if entry is not None:
                    found.append((room, entry))
        return found

    def seen(self, conn: Connection, now_ms: int) -> None:
        """A frame of this student arrived at server time `now_ms` (once per frame: no list
        of entries is built)."""
        user_id = conn.principal.user_id
        rooms = self._rooms
        for class_id in conn.class_ids:
            room = rooms.get(class_id)
            if room is not None:
                entry = room.roster.get(user_id)
                if entry is not None:
                    entry.last_seen_ms = now_ms

    def ack(self, conn: Connection, message: Ack) -> bool:
        """Record an applied rev; False when the ack names no session the headset follows."""
        session_id = message.session_id or conn.session_id
        class_id = self._session_class.get(session_id or "")
        if session_id is None or class_id is None or class_id not in conn.class_ids:
            return False
        room = self._rooms[class_id]
        entry = room.roster.get(conn.principal.user_id)
        if entry is None:
            return False
        state = room.states.get(session_id)
        entry.applied_rev = message.rev
        entry.applied_session = session_id
        entry.skew_ms = None
        if (
            state is not None
            and state.rev == message.rev
            and state.status == "playing"
            and message.applied_ms is not None
        ):
            entry.skew_ms = message.applied_ms - state.anchor_server_ms
        entry.last_seen_ms = self._clock.now_ms()
        room.dirty = True
        return True

    def status(self, conn: Connection, message: Status) -> None:
        for room, entry in self._entries(conn):
            entry.status = message
            entry.last_seen_ms = self._clock.now_ms()
            room.dirty = True

    def frame(self, conn: Connection, jpeg: bytes) -> None:
        now_ms = self._clock.now_ms()
        if conn.device_pk is not None:
            self._frames[conn.device_pk] = (now_ms, jpeg)
        for room, entry in self._entries(conn):
            entry.frame_ms = now_ms
            room.dirty = True

    def track(
        self,
        user_id: str,
        *,
        progress: tuple[str, float] | None = None,
        target: str | None = None,
        frame_rev: int | None = None,
    ) -> None:
        """What the tracking part learned about a student: committed progress (lesson id,
        progress), the newest gaze target, the count of view frames kept."""
        for room in self._rooms.values():
            entry = room.roster.get(user_id)
            if entry is None:
                continue
            if progress is not None:
                entry.lesson_id, entry.progress = progress
            if target is not None:
                entry.target = target
            if frame_rev is not None:
                entry.frame_rev = frame_rev
            room.dirty = True

    def frame_of(self, device_pk: str) -> tuple[int, bytes] | None:
        """The newest JPEG view of a device and its server time, if one arrived."""
        return self._frames.get(device_pk)

    # --- teachers' picture ------------------------------------------------------------------

    def picture(self, class_id: str, session_id: str | None = None) -> ClassPicture | None:
        room = self._rooms.get(class_id)
        if room is None:
            return None
        state = room.states.get(session_id) if session_id else room.current_state()
        sid = session_id or (state.session_id if state is not None else None)
        students = sorted(room.roster.values(), key=lambda e: e.nickname)
        return ClassPicture(
            class_id=class_id,
            session_id=sid,
            rev=state.rev if state is not None else None,
            lead_ms=self.current_lead_ms(sid) if sid else self._settings.start_lead_floor_ms,
            students=[e.live() for e in students],
        )

    def ensure_roster(self, org_id: str, class_id: str, roster: list[RosterEntry]) -> None:
        room = self._room(org_id, class_id)
        for entry in roster:
            room.roster.setdefault(
                entry.user_id, StudentEntry(entry.user_id, entry.nickname, entry.display_name)
            )

    def _send_pictures(self, now: float) -> None:
        for room in self._rooms.values():
            if not room.dirty or now - room.last_picture < CLASS_PICTURE_INTERVAL_S:
                continue
            room.dirty = False
            room.last_picture = now
            if not room.teachers:
                continue
            picture = self.picture(room.class_id)
            if picture is None:
                continue
            frame = encode(picture)
            for conn in room.teachers:
                conn.send(frame, ("class", room.class_id))

    # --- watchdog ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        silent_after = 2.0 * self._settings.heartbeat_s
        stall_limit = self._settings.ws_send_stall_s
        ping_every = min(self._settings.heartbeat_s, RTT_PING_INTERVAL_S)
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                now = self._clock.monotonic()
                pings = math.ceil(len(self.connections) * WATCH_INTERVAL_S / ping_every)
                for conn in list(self.connections):
                    if conn.closing:
                        continue
                    if conn.overflowed or conn.stalled_for(now) > stall_limit:
                        self.closed_too_slow += 1
                        log.info("closing connection %s: cannot drain", conn.id)
                        conn.close(CLOSE_TOO_SLOW, "could not drain the send queue")
                        self.leave(conn)  # gone for everyone now, however long closing takes
                    elif now - conn.last_heard > silent_after:
                        self.closed_silent += 1
                        log.info("closing connection %s: silent", conn.id)
                        conn.close(CLOSE_SILENT, "nothing heard for two heartbeat intervals")
                        self.leave(conn)
                    elif now - conn.last_ping >= ping_every and pings > 0:
                        pings -= 1
                        conn.ping()
                self._send_pictures(now)
            except Exception:  # the watchdog must outlive any one bad connection
                log.exception("live hub watchdog")
