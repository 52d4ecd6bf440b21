"""Event ingest: the one path from a headset's `event` (WebSocket or REST batch) to the disk.

    submit -> bounded queue -> ONE batch writer task -> one write transaction per batch
           -> after commit: acknowledgements (highest contiguous durable seq per stream)

The writer takes whatever has queued up (at most BATCH_MAX events; when only a few are
waiting it lingers FLUSH_LINGER_S for more), stores them with `EventLog.store` in one
transaction on the hot write lane (`Database.write_raw`: the writer thread's own sqlite3
connection, so the event loop keeps reading headsets meanwhile) and, once that committed,
tells every submitter the new heads of its streams (one `event_ack` per stream per batch).
While the queue is full a submitter waits for space (the WebSocket stops reading that headset,
the REST request waits) for at most ADMIT_TIMEOUT_S, then gets `busy`: nothing is dropped that
was acknowledged and memory stays bounded. On shutdown the queue is drained into a final batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Final, Protocol

import msgspec

from vrlms_edge.domain.events import EventLog, NewEvent, Stored
from vrlms_edge.errors import AppError
from vrlms_edge.live import protocol
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.live.protocol import Event
from vrlms_edge.live.sinks import Peer
from vrlms_edge.store.db import Database

log = logging.getLogger(__name__)

# Events waiting for the writer. At the design peak (300 headsets x 60 events/s) this is about
# half a second of input, a few MB: enough to ride out a slow fsync, small enough to bound memory.
QUEUE_CAPACITY: Final = 20_000
# Events per transaction: SQLite's insert rate flattens out above a few hundred rows per
# commit, and a bigger batch only delays the acks of its first events.
BATCH_MAX: Final = 5000
# A batch smaller than this waits FLUSH_LINGER_S for company: fewer, fuller commits when the
# box is quiet, at the price of a few ms of ack latency.
LINGER_BELOW: Final = 64
FLUSH_LINGER_S: Final = 0.003
# A submitter waits this long for queue space before it is told `busy` (it resends later).
ADMIT_TIMEOUT_S: Final = 10.0
# Limits of one event: a headset event is a few hundred bytes; 8 KiB leaves room for a
# detailed `result` while keeping one client from filling the queue with megabytes.
MAX_EVENT_DATA_BYTES: Final = 8 * 1024
# Events of one headset connection queued but not yet committed: a few batches' worth at the
# highest rate a headset may send, so a steady headset never waits on it.
MAX_IN_FLIGHT: Final = 500
# Events in one REST upload (its body is also capped by max_body_bytes).
MAX_BATCH_EVENTS: Final = 5000


class EventItem(msgspec.Struct, kw_only=True):
    """One event of a REST upload (the `event` message without `stream`)."""

    seq: protocol.Seq
    kind: protocol.KindName
    t_ms: protocol.TimeMs
    lesson_id: protocol.LessonId | None = None
    data: protocol.EventData = msgspec.field(default_factory=protocol.empty_object)


class EventUpload(msgspec.Struct, kw_only=True):
    """POST /api/events/: events a headset recorded offline, for one of its streams."""

    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    stream: protocol.StreamName
    events: Annotated[list[EventItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]


class UploadAck(msgspec.Struct, kw_only=True):
    """The heads after the upload committed: `{stream: seq}`, as `event_ack` would say."""

    acked: dict[str, int]


def event_data(blob: bytes, where: str) -> str:
    """The event's `data` as JSON text, checked: an object of at most MAX_EVENT_DATA_BYTES."""
    if len(blob) > MAX_EVENT_DATA_BYTES:
        raise AppError(
            413,
            "event_too_large",
            f"event data is {len(blob)} bytes; the limit is {MAX_EVENT_DATA_BYTES}",
            detail={"path": where},
        )
    if not blob.lstrip().startswith(b"{"):
        raise AppError(
            422, "validation_error", "event data must be a JSON object", detail={"path": where}
        )
    return blob.decode()


@dataclass(frozen=True, slots=True)
class Origin:
    """Who an event comes from: the headset (devices.id), the user signed in on it and, on a
    live connection, the session it follows (else the writer finds it by time)."""

    org_id: str
    device_pk: str
    user_id: str | None
    session_id: str | None = None


class AckSink(Protocol):
    """Where acknowledgements go: a headset connection, or a REST upload's receipt."""

    def settled(self, acks: dict[str, int], count: int, refused: list[tuple[str, int]]) -> None:
        """`count` of this sink's events were handled by a committed batch; `acks` are the
        heads of their streams; `refused` (stream, seq) were too far ahead to store."""

    def failed(self, count: int) -> None:
        """`count` of this sink's events were in a batch that could not be stored."""


@dataclass(slots=True)
class Receipt:
    """The AckSink of one REST upload: done when all of its events were handled."""

    expected: int
    acks: dict[str, int] = field(default_factory=dict)
    refused: list[tuple[str, int]] = field(default_factory=list)
    error: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def _count(self, count: int) -> None:
        self.expected -= count
        if self.expected <= 0:
            self.done.set()

    def settled(self, acks: dict[str, int], count: int, refused: list[tuple[str, int]]) -> None:
        for stream, seq in acks.items():
            self.acks[stream] = max(seq, self.acks.get(stream, 0))
        self.refused.extend(refused)
        self._count(count)

    def failed(self, count: int) -> None:
        self.error = True
        self._count(count)


class PeerAcks:
    """The AckSink of a headset connection: after each commit one `event_ack` per stream
    (coalesced in the connection's queue: a newer ack of a stream replaces a pending one).
    It also caps the headset's events waiting for the disk (MAX_IN_FLIGHT): beyond that its
    connection is not read until acks come back, so one fast headset cannot fill the queue
    that the whole class shares. `origin` is the connection's, made once."""

    __slots__ = ("_space", "in_flight", "origin", "peer")

    def __init__(self, peer: Peer, origin: Origin) -> None:
        self.peer = peer
        self.origin = origin
        self.in_flight = 0
        self._space = asyncio.Event()

    async def admit(self, timeout_s: float) -> None:
        """Wait (bounded) until this headset may queue one more event; then count it."""
        while self.in_flight >= MAX_IN_FLIGHT:
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), timeout_s)
            except TimeoutError:
                raise AppError(
                    503, "busy", "the box is saving events slower than they arrive; resend later"
                ) from None
        self.in_flight += 1

    def release(self, count: int) -> None:
        self.in_flight = max(0, self.in_flight - count)
        self._space.set()

    def settled(self, acks: dict[str, int], count: int, refused: list[tuple[str, int]]) -> None:
        self.release(count)
        for stream, seq in acks.items():
            self.peer.send(protocol.event_ack(stream, seq), ("event_ack", stream))
        for stream, seq in refused[:1]:
            self.peer.send(
                protocol.error(
                    "seq_out_of_window",
                    f"stream {stream} seq {seq} is too far beyond the acknowledged seq",
                )
            )

    def failed(self, count: int) -> None:
        self.release(count)
        self.peer.send(protocol.error("not_stored", "events could not be stored; resend them"))


Observer = Callable[[Stored], None]
Chunk = tuple[list[NewEvent], AckSink]  # events of one submitter, queued together


class Backlog:
    """The bounded queue between the submitters and the writer, counted in events.

    A chunk (one WebSocket event, or a whole REST upload) is queued while fewer than
    `capacity` events wait, so the queue holds at most capacity + MAX_BATCH_EVENTS events and
    a big upload is not starved by single events taking every slot that frees up."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self.closed = False
        self._chunks: deque[Chunk] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()

    def offer(self, chunk: Chunk) -> bool:
        """Queue the chunk if there is room now (never once closed)."""
        if self.size >= self.capacity or self.closed:
            return False
        self._chunks.append(chunk)
        self.size += len(chunk[0])
        self._ready.set()
        return True

    async def put(self, chunk: Chunk, timeout_s: float) -> bool:
        """Queue the chunk, waiting at most timeout_s for room; False if there was none."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self.offer(chunk):
                    if self.closed:
                        return False
                    self._space.clear()
                    await self._space.wait()
        except TimeoutError:
            return False
        return True

    def take(self, limit: int, batch: list[Chunk]) -> int:
        """Move queued chunks into `batch` until it holds `limit` events (a chunk is never
        split); returns the number of events in `batch`."""
        chunks = self._chunks
        held = sum(len(events) for events, _ in batch)
        while chunks and (held == 0 or held + len(chunks[0][0]) <= limit):
            chunk = chunks.popleft()
            held += len(chunk[0])
            self.size -= len(chunk[0])
            batch.append(chunk)
        if not chunks:
            self._ready.clear()
        self._space.set()
        return held

    def close(self) -> None:
        """Admit nothing more; wake the writer (to drain) and every waiting submitter."""
        self.closed = True
        self._ready.set()
        self._space.set()

    async def ready(self) -> None:
        await self._ready.wait()


class EventIngest:
    """The bounded queue and the single batch writer."""

    def __init__(
        self,
        db: Database,
        clock: ServerClock,
        *,
        capacity: int = QUEUE_CAPACITY,
        admit_timeout_s: float = ADMIT_TIMEOUT_S,
    ) -> None:
        self._db = db
        self._clock = clock
        self._backlog = Backlog(capacity)
        self._admit_timeout_s = admit_timeout_s
        self._log = EventLog()
        self._closing = False
        self.observers: list[Observer] = []
        # Counters for /metrics and the benchmark.
        self.stored_total = 0
        self.batches_total = 0
        self.failed_batches = 0

    @property
    def backlog(self) -> int:
        return self._backlog.size

    def new_event(self, origin: Origin, msg: Event | EventItem, stream: str) -> NewEvent:
        """Check one event and turn it into what the writer stores (raises AppError)."""
        data = event_data(bytes(msg.data), "$.data")
        return NewEvent(
            org_id=origin.org_id,
            device_pk=origin.device_pk,
            user_id=origin.user_id,
            stream=stream,
            seq=msg.seq,
            kind=msg.kind,
            t_ms=msg.t_ms,
            lesson_id=msg.lesson_id,
            data=data,
            received_ms=self._clock.now_ms(),
            session_id=origin.session_id,
        )

    async def submit(self, events: list[NewEvent], sink: AckSink) -> None:
        """Queue events of one submitter; waits while the queue is full (back-pressure),
        then `busy`."""
        if self._closing:
            raise AppError(503, "shutting_down", "the box is stopping; resend later")
        chunk = (events, sink)
        if self._backlog.offer(chunk) or await self._backlog.put(chunk, self._admit_timeout_s):
            return
        if self._closing:
            raise AppError(503, "shutting_down", "the box is stopping; resend later")
        raise AppError(
            503, "busy", "the box is saving events slower than they arrive; resend later"
        )

    async def accept(self, msg: Event, sink: PeerAcks) -> None:
        """A headset's `event` message: checked, then queued (the WebSocket's plug point)."""
        event = self.new_event(sink.origin, msg, msg.stream)
        if sink.in_flight < MAX_IN_FLIGHT:
            sink.in_flight += 1  # admit()'s fast path, without a coroutine per event
        else:
            await sink.admit(self._admit_timeout_s)
        if not self._closing and self._backlog.offer(([event], sink)):
            return  # submit()'s fast path: there was room
        try:
            await self.submit([event], sink)
        except BaseException:
            sink.release(1)
            raise

    async def upload(self, origin: Origin, upload: EventUpload) -> Receipt:
        """A REST upload: every event is checked before any is queued (all or nothing), then
        the answer waits until all are committed."""
        events = []
        for i, item in enumerate(upload.events):
            try:
                events.append(self.new_event(origin, item, upload.stream))
            except AppError as err:
                err.detail = {"path": f"$.events[{i}].data"}
                raise
        receipt = Receipt(expected=len(events))
        await self.submit(events, receipt)
        await receipt.done.wait()
        return receipt

    # --- the writer ---------------------------------------------------------------------

    async def run(self) -> None:
        """The batch writer: runs until `close()` and the queue is drained."""
        backlog = self._backlog
        while True:
            await backlog.ready()
            batch: list[Chunk] = []
            held = backlog.take(BATCH_MAX, batch)
            if 0 < held < LINGER_BELOW and not self._closing:
                await asyncio.sleep(FLUSH_LINGER_S)
                held = backlog.take(BATCH_MAX, batch)
            if batch:
                await self._write(batch)
            if self._closing and backlog.size == 0:
                return

    async def _write(self, batch: list[Chunk]) -> None:
        events = [event for chunk, _ in batch for event in chunk]
        now, now_ms = self._clock.now(), self._clock.now_ms()
        began = self._clock.monotonic()
        try:
            stored = await self._db.write_raw(
                lambda conn: self._log.store(conn, events, now, now_ms)
            )
        except Exception:
            log.exception(
                "could not store a batch of %d events; they stay unacknowledged", len(events)
            )
            self._log.rolled_back()
            self.failed_batches += 1
            for sink, chunks in _by_sink(batch):
                sink.failed(sum(map(len, chunks)))
            return
        self._log.committed(stored)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "batch: %d events (%d new) stored and committed in %.1f ms; %d queued",
                len(events),
                len(stored.fresh),
                (self._clock.monotonic() - began) * 1000,
                self._backlog.size,
            )
        self.batches_total += 1
        self.stored_total += len(stored.fresh)
        for sink, count, acks, rejected in _settlements(batch, stored):
            try:
                sink.settled(acks, count, rejected)
            except Exception:  # one broken connection must not stop the others' acks
                log.exception("delivering acks failed")
        for observer in self.observers:
            try:
                observer(stored)
            except Exception:
                log.exception("an ingest observer failed")

    async def close(self) -> None:
        """Refuse new events, write what is queued, stop the writer."""
        self._closing = True
        self._backlog.close()


def _by_sink(batch: list[Chunk]) -> list[tuple[AckSink, list[list[NewEvent]]]]:
    """The batch's chunks grouped by submitter, in the order they came."""
    grouped: dict[int, tuple[AckSink, list[list[NewEvent]]]] = {}
    for events, sink in batch:
        entry = grouped.get(id(sink))
        if entry is None:
            entry = grouped[id(sink)] = (sink, [])
        entry[1].append(events)
    return list(grouped.values())


def _settlements(
    batch: list[Chunk], stored: Stored
) -> list[tuple[AckSink, int, dict[str, int], list[tuple[str, int]]]]:
    """What each submitter of a committed batch is told: (sink, its events handled, the heads
    of its streams, its refused (stream, seq)). Most chunks are one WebSocket event."""
    heads = stored.heads
    refused = {(e.device_pk, e.stream, e.seq) for e in stored.refused}
    told = []
    for sink, chunks in _by_sink(batch):
        acks: dict[str, int] = {}
        rejected: list[tuple[str, int]] = []
        count = 0
        for events in chunks:
            count += len(events)
            for e in events:
                if e.stream not in acks:
                    acks[e.stream] = heads[(e.device_pk, e.stream)].acked
            if refused:
                rejected.extend(
                    (e.stream, e.seq) for e in events if (e.device_pk, e.stream, e.seq) in refused
                )
        told.append((sink, count, acks, rejected))
    return told
