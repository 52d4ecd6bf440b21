"""What the box does with each frame a peer sends: one handler per message type, and the
inbound limits that tell a busy client (`error` rate_limited) from an abusive one (close 1008).

Text frames are decoded against `protocol.ClientMessage`; a frame that cannot be accepted gets
an `error` and the connection stays open. Too many frames, or too many refused frames, close
it with CLOSE_POLICY; an oversized text frame closes it with CLOSE_TOO_BIG. The tracking part
plugs in through `live/sinks.py` (events, status, JPEG views).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from vrlms_edge.domain.sessions import Action, Change, StateBroadcast, change_state
from vrlms_edge.errors import AppError
from vrlms_edge.live import protocol
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.live.connection import Connection
from vrlms_edge.live.hub import Hub
from vrlms_edge.live.protocol import (
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    Ack,
    Command,
    Event,
    Refusal,
    Status,
    TimeRequest,
)
from vrlms_edge.live.sinks import FrameSinks
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Role

log = logging.getLogger(__name__)

# `time` requests: PROTOCOL.md promises at least 10 per second with bursts of 32 (a headset's
# first clock estimate takes one burst).
TIME_RATE_PER_S: Final = 10.0
TIME_BURST: Final = 32.0
# Every inbound frame: gaze at 30 Hz plus status, acks and time stay far below 100/s; a
# client sending more is broken or hostile and is closed (1008).
FRAME_RATE_PER_S: Final = 100.0
FRAME_BURST: Final = 200.0
# Refused frames (errors, rate_limited): a few mistakes are answered, a stream of them closes.
REFUSAL_RATE_PER_S: Final = 2.0
REFUSAL_BURST: Final = 20.0
# Text frames carry small JSON objects; 64 KiB is generous for an event's `data`.
MAX_TEXT_CHARS: Final = 64 * 1024
# One JPEG view of the headset, "small": 512 KiB also bounds every frame (aiohttp closes 1009).
MAX_FRAME_BYTES: Final = 512 * 1024
JPEG_MAGIC: Final = b"\xff\xd8\xff"


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(default=float("nan"))

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> bool:
        if self.stamp == self.stamp:  # not NaN: refill since the last take
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class InboundLimits:
    """One per connection."""

    time: TokenBucket = field(default_factory=lambda: TokenBucket(TIME_RATE_PER_S, TIME_BURST))
    frames: TokenBucket = field(default_factory=lambda: TokenBucket(FRAME_RATE_PER_S, FRAME_BURST))
    refusals: TokenBucket = field(
        default_factory=lambda: TokenBucket(REFUSAL_RATE_PER_S, REFUSAL_BURST)
    )


class Closing(Exception):
    """The frame is abusive: close the connection with this code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Dispatch:
    def __init__(
        self,
        *,
        db: Database,
        clock: ServerClock,
        broadcast: StateBroadcast,
        hub: Hub,
        sinks: FrameSinks,
    ) -> None:
        self._db = db
        self._clock = clock
        self._broadcast = broadcast
        self._hub = hub
        self._sinks = sinks

    def _refuse(self, conn: Connection, limits: InboundLimits, refusal: Refusal) -> None:
        if not limits.refusals.take(self._clock.monotonic()):
            raise Closing(CLOSE_POLICY, "too many refused frames")
        conn.send(protocol.error(refusal.code, refusal.message, refusal.request_id))

    def _count(self, limits: InboundLimits) -> None:
        if not limits.frames.take(self._clock.monotonic()):
            raise Closing(CLOSE_POLICY, "too many frames")

    async def text(self, conn: Connection, limits: InboundLimits, raw: str, t1: int) -> None:
        """Handle one text frame; t1 is the server time it arrived. Raises Closing."""
        if len(raw) > MAX_TEXT_CHARS:
            self._count(limits)
            raise Closing(CLOSE_TOO_BIG, "text frame too large")
        try:
            message = protocol.decode_client(raw)
        except Refusal as refusal:
            self._count(limits)
            self._refuse(conn, limits, refusal)
            return
        if type(message) is Event:  # most frames: checked first, not counted
            # Events are paced by the ingest's back-pressure instead (it stops reading a
            # headset whose events wait for the disk): counting them here would close a
            # well-behaved headset whose backlog is read in one go after such a pause.
            try:
                await self._event(conn, message)
            except Refusal as refusal:
                self._refuse(conn, limits, refusal)
            return
        self._count(limits)
        try:
            if isinstance(message, TimeRequest):
                self._time(conn, limits, message, t1)
            elif isinstance(message, Ack):
                self._ack(conn, message)
            elif isinstance(message, Command):
                await self._command(conn, message)
            elif isinstance(message, Status):
                self._status(conn, message)
        except Refusal as refusal:
            self._refuse(conn, limits, refusal)

    def binary(self, conn: Connection, limits: InboundLimits, data: bytes) -> None:
        """A binary frame is one JPEG of the headset's view (headset connections only)."""
        self._count(limits)
        try:
            if conn.device_pk is None:
                raise Refusal(
                    protocol.BINARY_NOT_ALLOWED, "binary frames are for headset views only"
                )
            if not data.startswith(JPEG_MAGIC):
                raise Refusal(protocol.INVALID_FRAME, "a binary frame must be one JPEG image")
            for sink in self._sinks.frame:
                sink(conn, data)
        except Refusal as refusal:
            self._refuse(conn, limits, refusal)
            return
        self._hub.frame(conn, data)

    # --- one place per message type ----------------------------------------------------------

    def _time(self, conn: Connection, limits: InboundLimits, message: TimeRequest, t1: int) -> None:
        if not limits.time.take(self._clock.monotonic()):
            raise Refusal(protocol.RATE_LIMITED, "too many time requests", message.id)
        clock = self._clock
        # t2 is stamped by the writer as it sends: queueing time is the box's, not the network's.
        conn.send(lambda: protocol.time_reply(message, t1, round(clock.now_ms_float())))

    def _ack(self, conn: Connection, message: Ack) -> None:
        if not self._hub.ack(conn, message):
            raise Refusal(protocol.NO_SESSION, "no session of yours matches this ack")

    async def _command(self, conn: Connection, message: Command) -> None:
        if conn.principal.role == Role.student:
            conn.send(
                protocol.result_error(message.id, protocol.FORBIDDEN, "students cannot command")
            )
            return
        change = Change(
            action=Action(message.action),
            lesson_id=message.lesson_id,
            position_ms=message.position_ms,
            lead_ms=message.lead_ms,
            on=message.on,
            message=message.message,
        )
        try:
            state = await change_state(
                self._db, self._clock, self._broadcast, conn.principal, message.session_id, change
            )
        except AppError as err:
            conn.send(protocol.result_error(message.id, err.code, err.message))
            return
        except Exception:  # never take the connection down with a bug: answer and log it
            log.exception("command %s on %s failed", message.action, message.session_id)
            conn.send(protocol.result_error(message.id, "internal_error", "internal error"))
            return
        conn.send(protocol.result_ok(message.id, state))

    async def _event(self, conn: Connection, message: Event) -> None:
        if conn.device_pk is None:
            raise Refusal(protocol.FORBIDDEN, "events come from headsets (a device token)")
        if self._sinks.event is None:
            # The box's shortcoming, not the headset's: answered, never counted as abuse.
            conn.send(
                protocol.error(
                    protocol.NOT_AVAILABLE,
                    f"event ingest is not available (stream {message.stream} seq {message.seq})",
                )
            )
            return
        await self._sinks.event(conn, message)

    def _status(self, conn: Connection, message: Status) -> None:
        self._hub.status(conn, message)
        for sink in self._sinks.status:
            sink(conn, message)
