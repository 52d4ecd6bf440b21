"""The reference headset client: the WebSocket protocol of a vrlms-edge box as executable code.

Written to be read by whoever implements a headset app (Unity/Android): each step of a lesson
is one small, commented piece. docs/headset-protocol.md explains the same in prose.

    client = HeadsetClient(box_url, credentials=Credentials("student01", "1001", "DEMO-HS-01"))
    await client.run(stop_event)        # login, connect, sync the clock, follow the teacher

1. Register (`register_device`, optional) and log in (`login`): POST /api/login/ with
   nickname, PIN and the headset's device id. An unknown device is registered as `pending`
   for a teacher/admin to approve; until then the socket closes with 4403 and the client
   retries slowly.
2. Connect with the token as `?token=` (engines rarely set headers); the box speaks first with
   `welcome` (the current session state, if any).
3. Clock: many `time` samples; offset = server - local (`ClockSync`). Every local instant maps
   to server time as local + offset and back as server - offset.
4. State (`Playback`): apply the highest rev. Playing: start at local time
   anchor_server_ms - offset, at position anchor_position_ms; position(t) = anchor_position_ms
   + (t - anchor_server_ms) in server time, so a late joiner starts mid-lesson in the right place.
   Then `ack` the rev with applied_ms = the server time at which it began playing (paused or
   stopped: when it held); applied_ms - anchor_server_ms is how late it started.
5. Events (`EventOutbox`): (stream, seq) with a random stream per app start; resent until an
   `event_ack` covers them, also across reconnects. Status: latest wins. Views: binary JPEG.
6. Reconnect with exponential back-off and jitter (`Backoff`); 4409 (replaced) means another
   connection of this device is live: stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import msgspec

from vrlms_edge.domain.sessions import SessionState
from vrlms_edge.live import protocol
from vrlms_edge.live.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_REPLACED,
    CLOSE_UNAUTHORIZED,
    ClassPicture,
    Error,
    EventAck,
    Result,
    TimeReply,
    Welcome,
)

log = logging.getLogger(__name__)

LocalClock = Callable[[], float]  # milliseconds, monotonic (e.g. Android elapsedRealtime)

# Clock sync: a first estimate from INITIAL_SAMPLES requests, SAMPLE_SPACING_S apart (inside
# the box's burst of 32), then RESYNC_SAMPLES every RESYNC_EVERY_S; the estimate uses the last
# SAMPLE_WINDOW samples (a minute or so: local and box clocks drift only ppm in that time).
INITIAL_SAMPLES: Final = 24
SAMPLE_SPACING_S: Final = 0.025
# Then the window fills at a calmer pace (spread out, samples see independent network delays;
# the estimate sharpens from ~5 ms to ~1-2 ms on a jittery Wi-Fi link), then periodic top-ups.
REFINE_SPACING_S: Final = 0.15
RESYNC_SAMPLES: Final = 4
RESYNC_EVERY_S: Final = 15.0
SAMPLE_WINDOW: Final = 64
# How long to wait for the first estimate before following states anyway (offset 0 = wrong).
SYNC_TIMEOUT_S: Final = 5.0
# Events not covered by an event_ack after this long are sent again.
EVENT_RESEND_S: Final = 5.0
# A box answering `not_available` has no event ingest: keep the events, ask again this much
# later (and after every reconnect) instead of resending into a refusal.
EVENT_UNAVAILABLE_RETRY_S: Final = 60.0
# Unacknowledged events kept (a lesson's worth at 10/s); beyond it the oldest are dropped and
# counted, since a headset's memory is finite.
MAX_UNACKED_EVENTS: Final = 20_000
# Reconnect back-off: BACKOFF_BASE_S doubling to BACKOFF_CAP_S; "equal jitter" (half fixed,
# half random) so 30 headsets cut by one Wi-Fi drop do not come back in lock-step. A
# connection that lasted STABLE_AFTER_S resets it.
BACKOFF_BASE_S: Final = 0.5
BACKOFF_CAP_S: Final = 15.0
STABLE_AFTER_S: Final = 10.0
# Closing handshake on stop: the box answers at once; past this the socket is just dropped.
CLOSE_TIMEOUT_S: Final = 5.0
# Not yet approved: ask again this often.
FORBIDDEN_RETRY_S: Final = 30.0
# A minimal JPEG stand-in for the simulator's views (SOI, APP0 JFIF, EOI).
PLACEHOLDER_VIEW: Final = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


# --- 1. login ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    nickname: str
    pin: str
    device_id: str | None = None
    org: str | None = None


class LoginFailed(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


async def login(http: aiohttp.ClientSession, base_url: str, creds: Credentials) -> str:
    """POST /api/login/ -> the bearer token. Registers an unknown device id as `pending`."""
    body: dict[str, Any] = {"nickname": creds.nickname, "pin": creds.pin}
    if creds.device_id is not None:
        body["device_id"] = creds.device_id
    if creds.org is not None:
        body["org"] = creds.org
    async with http.post(f"{base_url}/api/login/", json=body) as resp:
        data = await resp.json(content_type=None)
        if resp.status != 200:
            err = (data or {}).get("error", {})
            raise LoginFailed(resp.status, err.get("code", "?"), err.get("message", ""))
    token: str = data["token"]
    return token


async def register_device(
    http: aiohttp.ClientSession,
    base_url: str,
    device_id: str,
    *,
    model: str = "",
    app_version: str = "",
    org: str | None = None,
) -> str:
    """POST /api/devices/register/: announce the headset (model, app version) before anyone
    logs in on it, so a teacher can approve it ahead of the lesson. Its status: `pending`,
    `approved` or `blocked`."""
    body: dict[str, Any] = {"device_id": device_id, "model": model, "app_version": app_version}
    if org is not None:
        body["org"] = org
    async with http.post(f"{base_url}/api/devices/register/", json=body) as resp:
        data = await resp.json(content_type=None)
        if resp.status != 200:
            err = (data or {}).get("error", {})
            raise LoginFailed(resp.status, err.get("code", "?"), err.get("message", ""))
    status: str = data["status"]
    return status


def websocket_url(base_url: str, token: str) -> str:
    """ws(s)://host/websocket/?token=... (the token as a query: engines rarely set headers)."""
    ws = base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{ws.rstrip('/')}/websocket/?token={token}"


# --- 3. clock ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockSample:
    t0: float  # local, request sent
    t1: int  # server, request received
    t2: int  # server, reply sent
    t3: float  # local, reply received

    @property
    def rtt(self) -> float:
        """Network round trip: the whole exchange minus the box's own processing."""
        return (self.t3 - self.t0) - (self.t2 - self.t1)


class ClockSync:
    """offset = server - local, from `time` samples.

    With d_up, d_down the one-way delays: t1 - t0 = offset + d_up, t3 - t2 = d_down - offset.
    Each minimum over many samples finds a quiet moment in its own direction, so
    offset = (min(t1 - t0) - min(t3 - t2)) / 2 errs by (min d_down - min d_up) / 2, which is
    near zero on any link whose delays sometimes drop to their floor. (The classic NTP
    min-RTT filter takes both from one sample; both minima are never worse than that.)
    """

    def __init__(self, window: int = SAMPLE_WINDOW) -> None:
        self.samples: deque[ClockSample] = deque(maxlen=window)

    def add(self, sample: ClockSample) -> None:
        if sample.rtt >= 0:
            self.samples.append(sample)

    @property
    def ready(self) -> bool:
        return bool(self.samples)

    @property
    def offset_ms(self) -> float:
        if not self.samples:
            return 0.0
        up = min(s.t1 - s.t0 for s in self.samples)
        down = min(s.t3 - s.t2 for s in self.samples)
        return (up - down) / 2.0

    @property
    def min_rtt_ms(self) -> float | None:
        return min((s.rtt for s in self.samples), default=None)

    def to_server(self, local_ms: float) -> float:
        return local_ms + self.offset_ms

    def to_local(self, server_ms: float) -> float:
        return server_ms - self.offset_ms


# --- 4. state ----------------------------------------------------------------------------------


def position_ms(state: SessionState, server_ms: float) -> float:
    """Where the lesson is at server time `server_ms` (before the anchor: its position)."""
    if state.status != "playing":
        return float(state.anchor_position_ms)
    return state.anchor_position_ms + max(0.0, server_ms - state.anchor_server_ms)


@dataclass
class Applied:
    """One state as this headset applied it (what the simulator and tests measure)."""

    rev: int
    session_id: str
    status: str
    anchor_server_ms: int
    received_local_ms: float
    started_local_ms: float | None = None  # playing: when playback actually began
    start_position_ms: float | None = None
    applied_ms: int | None = None  # the acked value: when it took effect, in server time
    offset_ms: float = 0.0  # the clock offset estimate used


class Playback:
    """The headset's player: applies the highest rev and schedules starts on the local clock."""

    def __init__(
        self,
        clock: ClockSync,
        local_ms: LocalClock,
        on_applied: Callable[[Applied], None],
    ) -> None:
        self._clock = clock
        self._local_ms = local_ms
        self._on_applied = on_applied
        self.state: SessionState | None = None
        self.playing = False
        self._timer: asyncio.TimerHandle | None = None

    def position_now(self) -> float | None:
        if self.state is None:
            return None
        return position_ms(self.state, self._clock.to_server(self._local_ms()))

    def apply(self, state: SessionState, received_local_ms: float) -> bool:
        """Apply `state` if it is newer; False for an old or repeated rev."""
        current = self.state
        if (
            current is not None
            and current.session_id == state.session_id
            and (state.rev <= current.rev)
        ):
            return False
        self.state = state
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        applied = Applied(
            rev=state.rev,
            session_id=state.session_id,
            status=state.status,
            anchor_server_ms=state.anchor_server_ms,
            received_local_ms=received_local_ms,
        )
        if state.status != "playing":
            # Pause/stop/idle: hold at anchor_position_ms now.
            self.playing = False
            applied.applied_ms = round(self._clock.to_server(self._local_ms()))
            self._on_applied(applied)
            return True
        # Playing: begin at local time anchor - offset (or now, mid-lesson, if that is past).
        start_local = self._clock.to_local(state.anchor_server_ms)
        delay_s = (start_local - self._local_ms()) / 1000.0
        loop = asyncio.get_running_loop()
        if delay_s > 0:
            self._timer = loop.call_later(delay_s, self._start, state, applied)
        else:
            self._start(state, applied)
        return True

    def _start(self, state: SessionState, applied: Applied) -> None:
        self._timer = None
        if self.state is not state:
            return  # superseded while waiting
        now_local = self._local_ms()
        now_server = self._clock.to_server(now_local)
        position = position_ms(state, now_server)
        self.playing = True  # a real player starts rendering at `position` here
        applied.started_local_ms = now_local
        applied.offset_ms = self._clock.offset_ms
        applied.start_position_ms = position
        # The start instant in server time: applied_ms - anchor_server_ms is how late this
        # headset began (for a late joiner: when it joined, at position(t)).
        applied.applied_ms = round(now_server)
        self._on_applied(applied)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# --- 5. events ---------------------------------------------------------------------------------


class EventOutbox:
    """Events numbered per stream and kept until an `event_ack` covers them."""

    def __init__(self, stream: str | None = None) -> None:
        self.stream = stream or secrets.token_hex(8)  # random per app start
        self._seq = itertools.count(1)
        self.unacked: OrderedDict[int, tuple[float, protocol.Event]] = OrderedDict()
        self.acked_seq = 0
        self.dropped = 0
        self.paused_until = float("-inf")

    def add(
        self, kind: str, t_ms: int, data: dict[str, Any], lesson_id: str | None
    ) -> protocol.Event:
        event = protocol.Event(
            stream=self.stream,
            seq=next(self._seq),
            kind=kind,
            t_ms=t_ms,
            lesson_id=lesson_id,
            data=protocol.event_data(data),
        )
        if len(self.unacked) >= MAX_UNACKED_EVENTS:
            del self.unacked[min(self.unacked)]
            self.dropped += 1
        # Never sent: at the front, so the next `due` sends it (the order is of last sending).
        self.unacked[event.seq] = (float("-inf"), event)
        self.unacked.move_to_end(event.seq, last=False)
        return event

    def ack(self, stream: str, seq: int) -> None:
        if stream != self.stream:
            return
        self.acked_seq = max(self.acked_seq, seq)
        for s in [s for s in self.unacked if s <= seq]:
            del self.unacked[s]

    def due(self, now: float, resend_after_s: float = EVENT_RESEND_S) -> list[protocol.Event]:
        """Events never sent, or sent longer ago than resend_after_s; marks them sent.
        `unacked` is kept in order of last sending, so this stops at the first fresh one."""
        if now < self.paused_until:
            return []
        out = []
        for seq, (sent, event) in list(self.unacked.items()):
            if now - sent < resend_after_s:
                break
            del self.unacked[seq]
            self.unacked[seq] = (now, event)  # to the end: newest sending last
            out.append(event)
        return out

    def all_unsent(self) -> None:
        """After a reconnect: everything unacknowledged goes again."""
        self.paused_until = float("-inf")
        for seq, (_, event) in list(self.unacked.items()):
            self.unacked[seq] = (float("-inf"), event)

    def unavailable(self, now: float) -> None:
        """The box has no event ingest now: keep everything, try again later."""
        self.paused_until = now + EVENT_UNAVAILABLE_RETRY_S


# --- 6. reconnect ------------------------------------------------------------------------------


class Backoff:
    def __init__(
        self,
        base_s: float = BACKOFF_BASE_S,
        cap_s: float = BACKOFF_CAP_S,
        rng: random.Random | None = None,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0**self.attempt)
        self.attempt += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


class Stop(Exception):
    """The box said not to reconnect (replaced by a newer connection, or no credentials)."""


@dataclass
class HeadsetStats:
    connects: int = 0
    reconnects: int = 0
    close_codes: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)
    events_sent: int = 0
    status_sent: int = 0
    views_sent: int = 0


# --- the client --------------------------------------------------------------------------------

_server_decoder: Final = protocol.decode_server


class HeadsetClient:
    """One headset: connect, sync, follow states, ack; events/status/views; reconnect."""

    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        token: str | None = None,
        http: aiohttp.ClientSession | None = None,
        local_ms: LocalClock = monotonic_ms,
        rng: random.Random | None = None,
        ws_url: str | None = None,
    ) -> None:
        if credentials is None and token is None:
            raise ValueError("give credentials or a token")
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.token = token
        self._ws_url = ws_url  # override (e.g. through a proxy); the token is appended
        self._http = http
        self._own_http = http is None
        self.local_ms = local_ms
        self.clock = ClockSync()
        self.stats = HeadsetStats()
        self.playback = Playback(self.clock, local_ms, self._applied)
        self.events = EventOutbox()
        self.backoff = Backoff(rng=rng)
        self.welcome: Welcome | None = None
        self.connected = asyncio.Event()
        self.synced = asyncio.Event()
        self._enough_samples = asyncio.Event()
        self._events_waiting = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._sample_id = itertools.count(1)
        self._pending_samples: dict[int, float] = {}
        self._early_state: SessionState | None = None
        self.on_state: Callable[[Applied], None] | None = None

    # --- connection lifecycle ----------------------------------------------------------------

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def _token(self, fresh: bool = False) -> str:
        if self.token is not None and not fresh:
            return self.token
        if self.credentials is None:
            raise Stop("token refused and no credentials to log in again")
        self.token = await login(await self._session(), self.base_url, self.credentials)
        return self.token

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set (or the box says stop)."""
        fresh = False
        try:
            while not stop.is_set():
                started = time.monotonic()
                code: int | None = None
                try:
                    token = await self._token(fresh)
                    fresh = False
                    code = await self.connect_once(token, stop)
                except Stop:
                    return
                except LoginFailed as exc:
                    log.warning("login failed: %s", exc)
                    if exc.status in (400, 401, 403, 404, 422):
                        return
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.debug("connection failed: %r", exc)
                    key = f"connect:{type(exc).__name__}"
                    self.stats.errors[key] = self.stats.errors.get(key, 0) + 1
                if stop.is_set():
                    return
                if code == CLOSE_REPLACED:
                    return  # another connection of this device is live: never fight it
                if code == CLOSE_UNAUTHORIZED:
                    fresh = True  # log in again
                if time.monotonic() - started > STABLE_AFTER_S:
                    self.backoff.reset()
                delay = FORBIDDEN_RETRY_S if code == CLOSE_FORBIDDEN else self.backoff.next_delay()
                self.stats.reconnects += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            self.playback.cancel()
            if self._own_http and self._http is not None:
                await self._http.close()

    async def connect_once(self, token: str, stop: asyncio.Event) -> int | None:
        """One connection: welcome, clock sync, then follow until it closes. The close code."""
        http = await self._session()
        url = (
            f"{self._ws_url}?token={token}" if self._ws_url else websocket_url(self.base_url, token)
        )
        async with http.ws_connect(url, autoping=True, max_msg_size=4 * 1024 * 1024) as ws:
            self._ws = ws
            tasks: list[asyncio.Task[None]] = []
            try:
                first = await ws.receive(timeout=10)
                if first.type != aiohttp.WSMsgType.TEXT:
                    await ws.close()
                    self.stats.close_codes.append(ws.close_code or 0)
                    return ws.close_code
                welcome = _server_decoder(first.data)
                if not isinstance(welcome, Welcome):
                    raise aiohttp.ClientError("the box did not speak first with welcome")
                self.welcome = welcome
                self.stats.connects += 1
                self.connected.set()
                if welcome.session is not None:
                    if self.synced.is_set():  # a reconnect: the clock estimate still holds
                        self.playback.apply(welcome.session, self.local_ms())
                    else:
                        self._early_state = welcome.session
                self.events.all_unsent()
                tasks = [
                    asyncio.create_task(self._sync_clock()),
                    asyncio.create_task(self._resend_events()),
                ]
                await self._read(ws, welcome.heartbeat_s, stop)
            finally:
                self.connected.clear()
                self._ws = None
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            code = ws.close_code
            self.stats.close_codes.append(code or 0)
            return code

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, heartbeat_s: float, stop: asyncio.Event
    ) -> None:
        # The box pings at least every heartbeat; nothing for two intervals means it is gone.
        silence_s = 2.0 * heartbeat_s + 1.0

        async def close_on_stop() -> None:
            await stop.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_S)

        closer = asyncio.create_task(close_on_stop())
        try:
            while True:
                msg = await ws.receive(timeout=silence_s)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if stop.is_set():
                        await closer  # our own close: let its handshake finish first
                    return  # CLOSE / CLOSED / ERROR: the caller reads ws.close_code
                self._on_frame(msg.data, self.local_ms())
        finally:
            closer.cancel()

    def _on_frame(self, raw: str, received_local: float) -> None:
        try:
            message = _server_decoder(raw)
        except msgspec.DecodeError:  # includes ValidationError
            log.warning("unexpected frame from the box: %.200s", raw)
            return
        if isinstance(message, SessionState):
            if self.synced.is_set():
                self.playback.apply(message, received_local)
            elif self._early_state is None or message.rev > self._early_state.rev:
                self._early_state = message  # hold until the clock is known
        elif isinstance(message, TimeReply):
            sample_id = message.id if isinstance(message.id, int) else -1
            t0 = self._pending_samples.pop(sample_id, None)
            if t0 is not None:
                self.clock.add(ClockSample(t0, message.t1, message.t2, received_local))
                if len(self.clock.samples) >= INITIAL_SAMPLES // 2:
                    self._enough_samples.set()
        elif isinstance(message, EventAck):
            self.events.ack(message.stream, message.seq)
        elif isinstance(message, Error):
            code = message.error.code
            self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
            if code == protocol.NOT_AVAILABLE:
                self.events.unavailable(time.monotonic())

    # --- clock sync --------------------------------------------------------------------------

    async def _sample(self) -> None:
        sample_id = next(self._sample_id)
        t0 = self.local_ms()
        self._pending_samples[sample_id] = t0
        await self.send(protocol.TimeRequest(id=sample_id, t0=t0))

    async def _sync_clock(self) -> None:
        for _ in range(INITIAL_SAMPLES):
            await self._sample()
            await asyncio.sleep(SAMPLE_SPACING_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._enough_samples.wait(), SYNC_TIMEOUT_S)
        self._pending_samples.clear()
        self.synced.set()
        early, self._early_state = self._early_state, None
        if early is not None:
            self.playback.apply(early, self.local_ms())
        while len(self.clock.samples) < SAMPLE_WINDOW:
            await self._sample()
            await asyncio.sleep(REFINE_SPACING_S)
        while True:
            await asyncio.sleep(RESYNC_EVERY_S)
            for _ in range(RESYNC_SAMPLES):
                await self._sample()
                await asyncio.sleep(SAMPLE_SPACING_S)

    # --- what the headset sends ---------------------------------------------------------------

    async def send(self, message: msgspec.Struct) -> bool:
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_str(protocol.encode(message))
        except (ConnectionError, RuntimeError):
            return False
        return True

    def _applied(self, applied: Applied) -> None:
        self.stats.applied.append(applied)
        if self.on_state is not None:
            self.on_state(applied)
        ack = protocol.Ack(
            rev=applied.rev, applied_ms=applied.applied_ms, session_id=applied.session_id
        )
        asyncio.get_running_loop().create_task(self.send(ack))

    def server_now_ms(self) -> int:
        return round(self.clock.to_server(self.local_ms()))

    def record(self, kind: str, data: dict[str, Any]) -> None:
        """Record an interaction event (sent now and resent until acknowledged)."""
        state = self.playback.state
        lesson_id = state.lesson.id if state is not None and state.lesson is not None else None
        self.events.add(kind, self.server_now_ms(), data, lesson_id)
        self._events_waiting.set()

    async def _resend_events(self) -> None:
        while True:
            for event in self.events.due(time.monotonic()):
                if await self.send(event):
                    self.stats.events_sent += 1
            # New events go out at once; resends are checked every second.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._events_waiting.wait(), 1.0)
            self._events_waiting.clear()

    async def send_status(self, battery: float, app: str | None = None) -> None:
        playback = self.playback
        position = playback.position_now()
        if await self.send(
            protocol.Status(
                battery=battery,
                app=app,
                playing=playback.playing,
                position_ms=round(position) if position is not None else None,
            )
        ):
            self.stats.status_sent += 1

    async def send_view(self, jpeg: bytes) -> None:
        """One JPEG of the current view (keep it small, a few per second at most)."""
        ws = self._ws
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(jpeg)
            self.stats.views_sent += 1


# --- the teacher's side (what the dashboard does; the simulator uses it) ---------------------


class TeacherClient:
    """A teacher connection: sends `command`s and sees states and class pictures."""

    def __init__(
        self, ws_url: str, token: str, *, http: aiohttp.ClientSession | None = None
    ) -> None:
        self._url = f"{ws_url}?token={token}"
        self._http = http
        self._own_http = http is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Result]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.states: dict[str, SessionState] = {}
        self.picture: ClassPicture | None = None
        self.welcome: Welcome | None = None
        self.on_picture: Callable[[ClassPicture], None] | None = None

    async def __aenter__(self) -> TeacherClient:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self._url)
        first = await self._ws.receive(timeout=10)
        if first.type != aiohttp.WSMsgType.TEXT:
            raise aiohttp.ClientError(f"teacher connection refused: {self._ws.close_code}")
        welcome = _server_decoder(first.data)
        assert isinstance(welcome, Welcome)
        self.welcome = welcome
        self._reader = asyncio.create_task(self._read(self._ws))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._own_http and self._http is not None:
            await self._http.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                message = _server_decoder(msg.data)
            except msgspec.DecodeError:
                log.warning("unexpected frame from the box: %.200s", msg.data)
                continue
            if isinstance(message, SessionState):
                known = self.states.get(message.session_id)
                if known is None or known.rev < message.rev:
                    self.states[message.session_id] = message
            elif isinstance(message, Result) and isinstance(message.id, int):
                future = self._waiting.pop(message.id, None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif isinstance(message, ClassPicture):
                self.picture = message
                if self.on_picture is not None:
                    self.on_picture(message)

    async def command(self, session_id: str, action: str, **fields: Any) -> Result:
        """Send a command and wait for its `result`."""
        assert self._ws is not None
        request_id = next(self._ids)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        body = {"type": "command", "id": request_id, "session_id": session_id, "action": action}
        body.update(fields)
        await self._ws.send_str(msgspec.json.encode(body).decode())
        return await asyncio.wait_for(future, 10)
