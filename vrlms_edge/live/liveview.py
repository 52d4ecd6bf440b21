"""What the teacher sees of each headset beyond presence: its newest view frame, its gaze
target and its committed progress.

The live hub keeps presence, the newest `status` (latest wins) and applied revs per student,
and sends teachers the coalesced `class` picture (live/hub.py). This module plugs into the
hub's frame sinks (live/sinks.py) and the ingest observers, and feeds the hub:

- binary frames: one JPEG (magic checked), at most MAX_FRAME_BYTES, at most FRAME_RATE_PER_S
  per headset (token bucket), the newest kept in memory only (never on disk), with a frame
  revision and an ETag for GET /api/devices/{id}/frame.jpg; stale ones are forgotten;
- gaze: the target of the newest gaze event (or `status.view`) -> `Hub.track(target=...)`;
- progress: each committed Result change -> `Hub.track(progress=...)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain.events import Stored
from vrlms_edge.domain.results import gaze_target
from vrlms_edge.live import protocol
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.live.hub import Hub
from vrlms_edge.live.protocol import Refusal, Status
from vrlms_edge.live.sinks import Peer
from vrlms_edge.store.models import Class, Enrollment

# A view frame is a small JPEG (the dashboard shows thumbnails); 256 KiB fits a 1280x720 frame
# at ordinary quality and bounds memory at 30 headsets to under 8 MB.
MAX_FRAME_BYTES: Final = 256 * 1024
# Frames per second per headset, with a burst of as many: "a few per second at most".
FRAME_RATE_PER_S: Final = 4.0
FRAME_BURST: Final = 4.0
# A frame older than this is not the headset's view any more (it left, or stopped sending).
FRAME_TTL_S: Final = 60.0
JPEG_MAGIC: Final = b"\xff\xd8\xff"
FRAME_TOO_LARGE: Final = "frame_too_large"


@dataclass(slots=True)
class ViewFrame:
    user_id: str
    jpeg: bytes | None = None
    rev: int = 0
    etag: str = ""
    received: float = 0.0
    tokens: float = FRAME_BURST
    refilled: float = 0.0


class LiveView:
    def __init__(self, clock: ServerClock, hub: Hub | None = None) -> None:
        self._clock = clock
        self._hub = hub
        self._frames: dict[str, ViewFrame] = {}  # devices.id -> newest view
        self._targets: dict[str, str] = {}  # user_id -> newest gaze target
        self._last_sweep = 0.0

    # --- frames -------------------------------------------------------------------------

    def frame(self, device_pk: str, user_id: str, jpeg: bytes) -> int:
        """Keep a headset's newest view; returns its frame revision. Raises Refusal."""
        if len(jpeg) > MAX_FRAME_BYTES:
            raise Refusal(FRAME_TOO_LARGE, f"a view frame may be at most {MAX_FRAME_BYTES} bytes")
        if not jpeg.startswith(JPEG_MAGIC):
            raise Refusal(protocol.INVALID_FRAME, "a binary frame must be one JPEG image")
        now = self._clock.monotonic()
        slot = self._frames.get(device_pk)
        if slot is None:
            slot = self._frames[device_pk] = ViewFrame(user_id=user_id, refilled=now)
        slot.tokens = min(FRAME_BURST, slot.tokens + (now - slot.refilled) * FRAME_RATE_PER_S)
        slot.refilled = now
        if slot.tokens < 1.0:
            raise Refusal(
                protocol.RATE_LIMITED, f"at most {FRAME_RATE_PER_S:g} view frames per second"
            )
        slot.tokens -= 1.0
        slot.user_id = user_id
        slot.jpeg = jpeg
        slot.rev += 1
        slot.received = now
        slot.etag = f'"{slot.rev}-{hashlib.blake2b(jpeg, digest_size=8).hexdigest()}"'
        self._sweep(now)
        if self._hub is not None:
            self._hub.track(user_id, frame_rev=slot.rev)
        return slot.rev

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < FRAME_TTL_S:
            return
        self._last_sweep = now
        for slot in self._frames.values():
            if slot.jpeg is not None and now - slot.received > FRAME_TTL_S:
                slot.jpeg = None

    def latest_frame(self, device_pk: str) -> tuple[bytes, str] | None:
        """The newest view of a headset and its ETag (None: none, or stale)."""
        slot = self._frames.get(device_pk)
        if slot is None or slot.jpeg is None:
            return None
        if self._clock.monotonic() - slot.received > FRAME_TTL_S:
            slot.jpeg = None
            return None
        return slot.jpeg, slot.etag

    def user_on(self, device_pk: str) -> str | None:
        """The user whose headset sent the newest view of this device."""
        slot = self._frames.get(device_pk)
        return None if slot is None else slot.user_id

    def target_of(self, user_id: str) -> str | None:
        return self._targets.get(user_id)

    # --- what feeds the class picture -------------------------------------------------------

    def _target(self, user_id: str, target: str) -> None:
        if self._targets.get(user_id) == target:
            return
        self._targets[user_id] = target
        if self._hub is not None:
            self._hub.track(user_id, target=target)

    def on_frame(self, peer: Peer, jpeg: bytes) -> None:
        """Frame sink: called before the hub keeps the frame; Refusal keeps it out."""
        if peer.device_pk is None:
            raise Refusal(protocol.BINARY_NOT_ALLOWED, "binary frames are for headset views only")
        self.frame(peer.device_pk, peer.principal.user_id, jpeg)

    def on_status(self, peer: Peer, status: Status) -> None:
        """Status sink: a `view.target` (or view yaw/pitch) is the current gaze target."""
        if status.view is not None:
            target = gaze_target(status.view)
            if target is not None:
                self._target(peer.principal.user_id, target)

    def on_stored(self, stored: Stored) -> None:
        """Ingest observer: committed progress, and the newest gaze target of each student."""
        if self._hub is not None:
            for change in stored.changes:
                self._hub.track(change.user_id, progress=(change.lesson_id, change.progress))
        newest: dict[str, str] = {}
        for event in stored.fresh:
            if event.kind == "gaze" and event.user_id is not None:
                newest[event.user_id] = event.data
        for user_id, data in newest.items():
            try:
                decoded = msgspec.json.decode(data)
            except msgspec.DecodeError:
                continue
            target = gaze_target(decoded) if isinstance(decoded, dict) else None
            if target is not None:
                self._target(user_id, target)


async def teaches(s: AsyncSession, teacher_id: str, user_id: str) -> bool:
    """Whether the user is enrolled in one of the teacher's classes."""
    found = await s.execute(
        select(Enrollment.id)
        .join(Class, Class.id == Enrollment.class_id)
        .where(
            Class.teacher_id == teacher_id,
            Enrollment.user_id == user_id,
            Enrollment.deleted_at.is_(None),
            Class.deleted_at.is_(None),
        )
        .limit(1)
    )
    return found.first() is not None
