"""One WebSocket peer on the box: its bounded send queue, its own writer task, its round trip.

Nobody awaits a connection: `send()` and `offer_state()` only put a preencoded frame in the
queue and wake the writer task, which writes it to the socket. One shortcut: a broadcast
`state` whose whole wire frame was built once (`wire_frame`) is written straight to the socket
when nothing is queued or being sent and the socket keeps up, which is almost always: one
buffer append per headset instead of a task switch, an encode and a frame header. Coalescing
keys make newer frames replace older pending ones (a session's `state`: highest rev wins;
`class` pictures), so a slow peer skips intermediate revisions but always gets the newest.
When the queue overflows, or when the writer has been stuck on one send for longer than the
drain bound, the hub closes the connection with CLOSE_TOO_SLOW: it is cut off, never waited for.

Round trip: the box pings with an 8-byte payload (its monotonic clock); RFC 6455 makes the peer
echo it in the pong, so RTT needs nothing from the headset app.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable, Hashable
from typing import Final

from aiohttp import web

from vrlms_edge.domain.principal import Principal

log = logging.getLogger(__name__)

# Pending frames per connection before the peer counts as not keeping up. A headset is sent
# little: session states (teacher-paced and coalesced per session, so one slot each), replies
# to its own requests (a full `time` burst is 32) and event acks; a teacher gets coalesced
# class pictures. 64 holds a whole time burst plus everything else twice over, while a
# connection that falls this far behind is better reconnected (its `welcome` has the state).
MAX_PENDING_FRAMES: Final = 64
# Round-trip samples kept per connection: the last ~30 s at one ping every 2 s.
RTT_SAMPLES: Final = 16
# A pong claiming an RTT beyond this is junk (a peer echoing garbage), not a measurement.
MAX_PLAUSIBLE_RTT_S: Final = 60.0
# Kernel send buffer of a WebSocket: small, so that a peer that stops reading shows up as a
# stuck writer within a few states instead of after megabytes of autotuned buffer. 64 KiB
# still carries >3 MB/s at a 20 ms Wi-Fi round trip, far above what a classroom needs.
SOCKET_SEND_BUFFER: Final = 64 * 1024
# Transport-level buffer above which aiohttp's writer waits for the socket (drain).
TRANSPORT_HIGH_WATER: Final = 32 * 1024
# How often a writer looks whether a peer that fell behind took some of its backlog.
DRAIN_POLL_S: Final = 0.02
# How long a closing handshake may take before the socket is simply dropped.
CLOSE_GRACE_S: Final = 2.0

_ids = itertools.count(1)
# A preencoded frame, or a function that encodes one when the writer sends it.
Frame = str | bytes | Callable[[], str]
_PING: Final = struct.Struct(">d")
_FIN_TEXT: Final = 0x81  # FIN bit + opcode 1 (text)


def wire_frame(text: str) -> bytes:
    """A whole RFC 6455 text frame as a server sends it (unmasked, unfragmented, uncompressed:
    the box negotiates no extensions), built once for every connection of a broadcast."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", _FIN_TEXT, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, size)
    return header + payload


class Connection:
    """A peer of /websocket/ as the hub sees it (also the `Peer` handed to frame sinks)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        principal: Principal,
        *,
        monotonic: Callable[[], float],
        device_pk: str | None = None,
        device_label: str | None = None,
    ) -> None:
        self.id = next(_ids)
        self.ws = ws
        self.request = request
        self.principal = principal
        self.device_pk = device_pk
        self.device_label = device_label
        self.class_ids: frozenset[str] = frozenset()
        # The session this headset follows (of the newest state it was sent).
        self.session_id: str | None = None
        self._monotonic = monotonic
        self._pending: dict[Hashable, Frame] = {}
        self._pending_rev: dict[Hashable, int] = {}
        self._on_sent: dict[Hashable, Callable[[float], None]] = {}
        self._control: list[tuple[str, bytes]] = []  # ("ping"|"pong", payload)
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        # The socket's transport, kept once the writer starts (aiohttp's request.transport
        # is a property chain: a tenth of a fan-out's cost per connection).
        self._transport: asyncio.Transport | None = None
        self._closer: asyncio.Task[None] | None = None
        self._send_started: float | None = None
        self.close_code: int | None = None
        self.sent_frames = 0
        now = monotonic()
        self.connected_at = now
        self.last_heard = now
        self.last_ping = float("-inf")
        self.rtt_s: deque[float] = deque(maxlen=RTT_SAMPLES)
        self.overflowed = False

    # --- queue ------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def send(self, frame: Frame, key: Hashable | None = None) -> None:
        """Queue a preencoded frame (or a function that encodes it at send time, for replies
        that carry the send time); a frame with the key of a pending one replaces it."""
        if self.closing:
            return
        if key is not None and key in self._pending:
            self._pending[key] = frame
            return
        if len(self._pending) >= MAX_PENDING_FRAMES:
            self.overflowed = True  # the hub's watchdog closes it (never here: no awaiting)
            return
        self._pending[key if key is not None else ("once", next(_ids))] = frame
        self._wake.set()

    def offer_state(
        self,
        session_id: str,
        rev: int,
        frame: str,
        on_sent: Callable[[float], None] | None = None,
        wire: bytes | None = None,
    ) -> None:
        """Queue a session state unless a newer rev of that session is already pending;
        `on_sent(monotonic time)` is called once it was handed to the socket. `wire`: the
        same state as `wire_frame(frame)`, written at once when the connection is idle."""
        key = ("state", session_id)
        if self._pending_rev.get(key, -1) > rev and key in self._pending:
            return
        if wire is not None and self._write_now(wire):
            if on_sent is not None:
                on_sent(self._monotonic())
            return
        self._pending_rev[key] = rev
        if on_sent is not None:
            self._on_sent[key] = on_sent
        else:
            self._on_sent.pop(key, None)
        self.send(frame, key)

    def _write_now(self, wire: bytes) -> bool:
        """Write a whole frame to the socket if that keeps the order of frames and the peer
        keeps up: the writer has started and holds nothing, and the kernel took everything
        written so far. Otherwise (False) it is queued, so a peer that stops reading meets
        the writer's drain and stall bounds exactly as without this shortcut."""
        if self._writer is None or self._pending or self._control or self.closing:
            return False
        transport = self._transport
        if (
            self._send_started is not None
            or transport is None
            or transport.is_closing()
            or self.ws.closed
            or transport.get_write_buffer_size() > 0
        ):
            return False
        transport.write(wire)
        self.sent_frames += 1
        return True

    def put_first(self, frame: str) -> None:
        """Queue a frame ahead of everything pending (the `welcome`)."""
        key = ("first", next(_ids))
        self._pending[key] = frame
        self._wake.set()
        for other in [k for k in self._pending if k != key]:
            self._pending[other] = self._pending.pop(other)

    def ping(self) -> None:
        """Queue a ping carrying the send time (stamped when the writer sends it)."""
        self.last_ping = self._monotonic()
        self._control.append(("ping", b""))
        self._wake.set()

    def pong(self, payload: bytes) -> None:
        self._control.append(("pong", payload))
        self._wake.set()

    def heard(self) -> None:
        self.last_heard = self._monotonic()

    def on_pong(self, payload: bytes) -> None:
        if len(payload) != _PING.size:
            return
        (sent,) = _PING.unpack(payload)
        rtt = self._monotonic() - sent
        if 0.0 <= rtt <= MAX_PLAUSIBLE_RTT_S:
            self.rtt_s.append(rtt)

    @property
    def rtt_ms(self) -> float | None:
        """The newest measured round trip, in ms."""
        return round(self.rtt_s[-1] * 1000.0, 2) if self.rtt_s else None

    def stalled_for(self, now: float) -> float:
        """How long the writer has been stuck in one send (0 when idle or moving)."""
        return 0.0 if self._send_started is None else now - self._send_started

    # --- writer -----------------------------------------------------------------------------

    def start_writer(self) -> None:
        self._transport = self.request.transport
        self._limit_buffers()
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")

    def _limit_buffers(self) -> None:
        transport = self.request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Not a TCP socket (a Unix socket, say): keep its default buffer.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
        transport.set_write_buffer_limits(high=TRANSPORT_HIGH_WATER)

    async def _write_loop(self) -> None:
        ws = self.ws
        try:
            while not self.closing:
                await self._wake.wait()
                self._wake.clear()
                while (self._control or self._pending) and not self.closing:
                    self._send_started = self._monotonic()
                    if self._control:
                        kind, payload = self._control.pop(0)
                        if kind == "ping":
                            await ws.ping(_PING.pack(self._monotonic()))
                        else:
                            await ws.pong(payload)
                    else:
                        await self._room_in_socket()
                        key = next(iter(self._pending))
                        frame = self._pending.pop(key)
                        self._pending_rev.pop(key, None)
                        on_sent = self._on_sent.pop(key, None)
                        if callable(frame):
                            frame = frame()
                        if isinstance(frame, str):
                            await ws.send_str(frame)
                        else:
                            await ws.send_bytes(frame)
                        self.sent_frames += 1
                        if on_sent is not None:
                            on_sent(self._monotonic())
                    self._send_started = None
        except (ConnectionError, RuntimeError) as exc:
            # The socket went away under us; the receive loop sees it too and cleans up.
            log.debug("writer of connection %s stopped: %s", self.id, exc)
        finally:
            self._send_started = None

    async def _room_in_socket(self) -> None:
        """Wait while the socket holds more than TRANSPORT_HIGH_WATER bytes the peer has not
        taken (this wait counts as a stuck send). aiohttp's own flow control only counts what
        passed through it, not the states written directly."""
        transport = self.request.transport
        while (  # noqa: ASYNC110 - a transport has no public "drained" event to wait on
            transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() > TRANSPORT_HIGH_WATER
        ):
            await asyncio.sleep(DRAIN_POLL_S)

    # --- closing ----------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Close without waiting: pending frames are dropped, the close frame follows what the
        socket already holds, and after CLOSE_GRACE_S the socket is dropped regardless."""
        if self.closing:
            return
        self.close_code = code
        self._closer = asyncio.create_task(self._shutdown(code, reason), name=f"ws-close-{self.id}")

    async def _shutdown(self, code: int, reason: str) -> None:
        if self._writer is not None:
            self._writer.cancel()
        self._pending.clear()
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                await self.ws.close(code=code, message=reason.encode()[:120], drain=False)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            transport = self.request.transport
            if transport is not None:
                transport.abort()

    async def finished(self) -> None:
        """Wait for the writer and a running close to end (the handler's last step)."""
        if self._closer is None and self._writer is not None:
            self._writer.cancel()
        for task in (self._writer, self._closer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
