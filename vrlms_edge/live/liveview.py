"""The teacher's live view of every headset, kept in memory only.

Headsets report `status` (latest wins) and binary JPEG frames of their view (latest wins,
size- and rate-limited, never written to disk); the ingest writer reports progress and gaze
after each commit; the live connections report presence and applied revs. Teachers' connections
watch their classes: each change marks the class dirty for its watchers, and a watcher flushes
at most once per MIN_FLUSH_INTERVAL_S (10 per second) whatever the headsets send, one `class`
message per changed class, each encoded once for every teacher watching that class.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain.events import Stored
from vrlms_edge.domain.principal import Principal
from vrlms_edge.domain.results import gaze_target
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.models import Class, Enrollment, Role, User

# A view frame is a small JPEG (the dashboard shows thumbnails); 256 KiB fits a 1280x720 frame
# at ordinary quality and bounds memory at 30 headsets to under 8 MB.
MAX_FRAME_BYTES: Final = 256 * 1024
# Frames per second per headset, with a burst of as many: "a few per second at most".
FRAME_RATE_PER_S: Final = 4.0
FRAME_BURST: Final = 4.0
# A teacher's connection gets at most 10 class pictures per second: smooth enough to watch,
# bounded whatever 30 headsets at 20 Hz send.
MIN_FLUSH_INTERVAL_S: Final = 0.1
# `status.view` is small structured data (pose, target, scene); bigger is refused.
MAX_VIEW_BYTES: Final = 2048
JPEG_MAGIC: Final = b"\xff\xd8\xff"


class HeadsetStatus(msgspec.Struct, kw_only=True, tag="status", tag_field="type"):
    """`status` (headset -> box): battery, app, playback and view; latest wins."""

    battery: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    app: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    playing: bool | None = None
    position_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    view: dict[str, Any] | None = None
    id: int | str | None = None


class DeviceRef(msgspec.Struct, kw_only=True):
    id: str
    name: str


class StudentPicture(msgspec.Struct, kw_only=True):
    """One student in the class picture."""

    user_id: str
    nickname: str
    display_name: str
    present: bool
    device: DeviceRef | None
    battery: float | None
    app: str | None
    playing: bool | None
    position_ms: int | None
    applied_rev: int | None
    skew_ms: int | None
    lesson_id: str | None
    progress: float | None
    target: str | None
    frame_rev: int
    last_seen_ms: int | None


class ClassPicture(msgspec.Struct, kw_only=True, tag="class", tag_field="type"):
    """`class` (box -> teacher): the live picture of one class (full, not a diff)."""

    class_id: str
    server_ms: int
    students: list[StudentPicture]


@dataclass(slots=True)
class Headset:
    device_pk: str
    device_name: str
    org_id: str
    user_id: str | None = None
    present: bool = False
    status: HeadsetStatus | None = None
    target: str | None = None
    applied_rev: int | None = None
    skew_ms: int | None = None
    last_seen_ms: int | None = None
    frame: bytes | None = None
    frame_rev: int = 0
    frame_etag: str = ""
    tokens: float = FRAME_BURST
    refilled: float = 0.0


@dataclass(slots=True)
class Progress:
    lesson_id: str
    progress: float


@dataclass(frozen=True, slots=True)
class RosterEntry:
    user_id: str
    nickname: str
    display_name: str


@dataclass(slots=True)
class Watch:
    """One teacher connection watching some classes."""

    org_id: str
    class_ids: tuple[str, ...]
    send: Callable[[bytes], None]
    dirty: set[str] = field(default_factory=set)
    last_flush: float = -1e9
    timer: asyncio.TimerHandle | None = None
    sent: int = 0
    closed: bool = False


class FrameRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LiveView:
    def __init__(self, clock: ServerClock) -> None:
        self._clock = clock
        self._headsets: dict[str, Headset] = {}
        self._device_of: dict[str, str] = {}  # user_id -> devices.id the user is on now
        self._progress: dict[str, Progress] = {}  # user_id -> newest result change
        self._rosters: dict[str, list[RosterEntry]] = {}  # class_id -> students
        self._classes_of: dict[str, set[str]] = {}  # user_id -> watched class ids
        self._watchers: dict[str, set[int]] = {}  # class_id -> id(watch)
        self._watches: dict[int, Watch] = {}
        self._encoded: dict[str, tuple[int, bytes]] = {}  # class_id -> (version, picture)
        self._versions: dict[str, int] = {}

    # --- inputs -------------------------------------------------------------------------

    def connected(self, org_id: str, user_id: str, device_pk: str, device_name: str) -> None:
        headset = self._headsets.get(device_pk)
        if headset is None:
            headset = Headset(device_pk=device_pk, device_name=device_name, org_id=org_id)
            self._headsets[device_pk] = headset
        if headset.user_id is not None and headset.user_id != user_id:
            self._device_of.pop(headset.user_id, None)
            self._changed(headset.user_id)
        headset.user_id = user_id
        headset.present = True
        headset.device_name = device_name
        headset.last_seen_ms = self._clock.now_ms()
        previous = self._device_of.get(user_id)
        if previous is not None and previous != device_pk and previous in self._headsets:
            self._headsets[previous].present = False
        self._device_of[user_id] = device_pk
        self._changed(user_id)

    def disconnected(self, device_pk: str) -> None:
        headset = self._headsets.get(device_pk)
        if headset is None:
            return
        headset.present = False
        headset.frame = None  # frames live only while the headset is here
        headset.last_seen_ms = self._clock.now_ms()
        if headset.user_id is not None:
            self._changed(headset.user_id)

    def status(self, device_pk: str, status: HeadsetStatus) -> None:
        """A headset's `status`: replaces the previous one (raises ValueError if too big)."""
        headset = self._headsets.get(device_pk)
        if headset is None:
            return
        if status.view is not None and len(msgspec.json.encode(status.view)) > MAX_VIEW_BYTES:
            raise ValueError(f"status.view is larger than {MAX_VIEW_BYTES} bytes")
        headset.status = status
        headset.last_seen_ms = self._clock.now_ms()
        if status.view is not None:
            target = gaze_target(status.view)
            if target is not None:
                headset.target = target
        if headset.user_id is not None:
            self._changed(headset.user_id)

    def applied(self, device_pk: str, rev: int, skew_ms: int | None) -> None:
        """A headset acknowledged session rev `rev`, `skew_ms` off the anchor."""
        headset = self._headsets.get(device_pk)
        if headset is None:
            return
        headset.applied_rev = rev
        headset.skew_ms = skew_ms
        if headset.user_id is not None:
            self._changed(headset.user_id)

    def frame(self, device_pk: str, jpeg: bytes) -> int:
        """Keep a headset's newest view frame; returns its frame revision.
        Raises FrameRefused (too large, not a JPEG, over the rate)."""
        headset = self._headsets.get(device_pk)
        if headset is None:
            raise FrameRefused("not_a_headset", "only a headset's connection sends frames")
        if len(jpeg) > MAX_FRAME_BYTES:
            raise FrameRefused("frame_too_large", f"a frame may be {MAX_FRAME_BYTES} bytes")
        if not jpeg.startswith(JPEG_MAGIC):
            raise FrameRefused("not_jpeg", "a binary frame must be one JPEG image")
        now = self._clock.monotonic()
        headset.tokens = min(
            FRAME_BURST, headset.tokens + (now - headset.refilled) * FRAME_RATE_PER_S
        )
        headset.refilled = now
        if headset.tokens < 1.0:
            raise FrameRefused("rate_limited", f"at most {FRAME_RATE_PER_S:g} frames per second")
        headset.tokens -= 1.0
        headset.frame = jpeg
        headset.frame_rev += 1
        digest = hashlib.blake2b(jpeg, digest_size=8).hexdigest()
        headset.frame_etag = f'"{headset.frame_rev}-{digest}"'
        if headset.user_id is not None:
            self._changed(headset.user_id)
        return headset.frame_rev

    def latest_frame(self, device_pk: str) -> tuple[bytes, str] | None:
        headset = self._headsets.get(device_pk)
        if headset is None or headset.frame is None:
            return None
        return headset.frame, headset.frame_etag

    def user_on(self, device_pk: str) -> str | None:
        headset = self._headsets.get(device_pk)
        return None if headset is None else headset.user_id

    def on_stored(self, stored: Stored) -> None:
        """Ingest observer: progress from committed result changes, the newest gaze target."""
        for change in stored.changes:
            self._progress[change.user_id] = Progress(change.lesson_id, change.progress)
            self._changed(change.user_id)
        newest_gaze: dict[str, str] = {}
        for event in stored.fresh:
            if event.kind == "gaze" and event.user_id is not None:
                newest_gaze[event.user_id] = event.data
        for user_id, data in newest_gaze.items():
            device_pk = self._device_of.get(user_id)
            if device_pk is None:
                continue
            try:
                decoded = msgspec.json.decode(data)
            except msgspec.DecodeError:
                continue
            target = gaze_target(decoded) if isinstance(decoded, dict) else None
            if target is not None:
                self._headsets[device_pk].target = target
                self._changed(user_id)

    # --- teachers -------------------------------------------------------------------------

    def watch(
        self,
        org_id: str,
        rosters: dict[str, list[RosterEntry]],
        send: Callable[[bytes], None],
    ) -> Watch:
        """Start sending `class` pictures of these classes to one teacher connection; the
        first pictures go out at once."""
        watch = Watch(org_id=org_id, class_ids=tuple(rosters), send=send)
        self._watches[id(watch)] = watch
        for class_id, roster in rosters.items():
            self._rosters[class_id] = roster
            self._versions[class_id] = self._versions.get(class_id, 0) + 1
            self._watchers.setdefault(class_id, set()).add(id(watch))
            for entry in roster:
                self._classes_of.setdefault(entry.user_id, set()).add(class_id)
            watch.dirty.add(class_id)
        self._schedule(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        watch.closed = True
        if watch.timer is not None:
            watch.timer.cancel()
        self._watches.pop(id(watch), None)
        for class_id in watch.class_ids:
            watchers = self._watchers.get(class_id)
            if watchers is None:
                continue
            watchers.discard(id(watch))
            if not watchers:
                del self._watchers[class_id]
                for entry in self._rosters.pop(class_id, []):
                    classes = self._classes_of.get(entry.user_id)
                    if classes is not None:
                        classes.discard(class_id)
                        if not classes:
                            del self._classes_of[entry.user_id]
                self._encoded.pop(class_id, None)

    def picture(self, class_id: str) -> ClassPicture:
        now_ms = self._clock.now_ms()
        students = []
        for entry in self._rosters.get(class_id, []):
            device_pk = self._device_of.get(entry.user_id)
            headset = self._headsets.get(device_pk) if device_pk else None
            status = headset.status if headset else None
            progress = self._progress.get(entry.user_id)
            students.append(
                StudentPicture(
                    user_id=entry.user_id,
                    nickname=entry.nickname,
                    display_name=entry.display_name,
                    present=bool(headset and headset.present),
                    device=DeviceRef(id=headset.device_pk, name=headset.device_name)
                    if headset
                    else None,
                    battery=status.battery if status else None,
                    app=status.app if status else None,
                    playing=status.playing if status else None,
                    position_ms=status.position_ms if status else None,
                    applied_rev=headset.applied_rev if headset else None,
                    skew_ms=headset.skew_ms if headset else None,
                    lesson_id=progress.lesson_id if progress else None,
                    progress=progress.progress if progress else None,
                    target=headset.target if headset else None,
                    frame_rev=headset.frame_rev if headset else 0,
                    last_seen_ms=headset.last_seen_ms if headset else None,
                )
            )
        return ClassPicture(class_id=class_id, server_ms=now_ms, students=students)

    def _changed(self, user_id: str) -> None:
        for class_id in self._classes_of.get(user_id, ()):
            self._versions[class_id] = self._versions.get(class_id, 0) + 1
            for key in self._watchers.get(class_id, ()):
                watch = self._watches[key]
                watch.dirty.add(class_id)
                self._schedule(watch)

    def _schedule(self, watch: Watch) -> None:
        if watch.timer is not None or watch.closed:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, watch.last_flush + MIN_FLUSH_INTERVAL_S - loop.time())
        watch.timer = loop.call_later(delay, self._flush, watch)

    def _flush(self, watch: Watch) -> None:
        watch.timer = None
        if watch.closed:
            return
        watch.last_flush = asyncio.get_running_loop().time()
        dirty, watch.dirty = watch.dirty, set()
        for class_id in sorted(dirty):
            watch.send(self._encoded_picture(class_id))
            watch.sent += 1

    def _encoded_picture(self, class_id: str) -> bytes:
        version = self._versions.get(class_id, 0)
        cached = self._encoded.get(class_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        blob = msgspec.json.encode(self.picture(class_id))
        self._encoded[class_id] = (version, blob)
        return blob


# --- rosters and who may see a headset ---------------------------------------------------------


async def watched_rosters(s: AsyncSession, teacher: Principal) -> dict[str, list[RosterEntry]]:
    """The classes a teacher's connection watches (admin: every class of the org), with their
    enrolled students."""
    classes = select(Class.id).where(Class.org_id == teacher.org_id, Class.deleted_at.is_(None))
    if teacher.role != Role.admin:
        classes = classes.where(Class.teacher_id == teacher.user_id)
    class_ids = list((await s.execute(classes.order_by(Class.id))).scalars())
    rosters: dict[str, list[RosterEntry]] = {c: [] for c in class_ids}
    if not class_ids:
        return rosters
    rows = await s.execute(
        select(Enrollment.class_id, User.id, User.nickname, User.display_name)
        .join(User, User.id == Enrollment.user_id)
        .where(
            Enrollment.class_id.in_(class_ids),
            Enrollment.deleted_at.is_(None),
            User.deleted_at.is_(None),
        )
        .order_by(User.nickname)
    )
    for class_id, user_id, nickname, display_name in rows:
        rosters[class_id].append(RosterEntry(user_id, nickname, display_name))
    return rosters


async def teaches(s: AsyncSession, teacher_id: str, user_id: str) -> bool:
    """Whether the user is enrolled in one of the teacher's classes."""
    found = await s.execute(
        select(Enrollment.id)
        .join(Class, Class.id == Enrollment.class_id)
        .where(
            Class.teacher_id == teacher_id,
            Enrollment.user_id == user_id,
            Enrollment.deleted_at.is_(None),
        )
        .limit(1)
    )
    return found.first() is not None
