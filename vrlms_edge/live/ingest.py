"""Event ingest: the one path from a headset's `event` (WebSocket or REST batch) to the disk.

    submit -> bounded queue -> ONE batch writer task -> one write transaction per batch
           -> after commit: acknowledgements (highest contiguous durable seq per stream)

The writer takes whatever has queued up (at most BATCH_MAX events; when only a few are
waiting it lingers FLUSH_LINGER_S for more), stores them with `EventLog.store` in one
transaction and, once that committed, tells every submitter the new heads of its streams.
While the queue is full a submitter waits for space (the WebSocket stops reading that headset,
the REST request waits) for at most ADMIT_TIMEOUT_S, then gets `busy`: nothing is dropped that
was acknowledged and memory stays bounded. On shutdown the queue is drained into a final batch.
"""

from __future__ import annotations

import asyncio
import logging
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
QUEUE_CAPACITY: Final = 10_000
# Events per transaction: SQLite's insert rate flattens out above a few hundred rows per
# commit, and a bigger batch only delays the acks of its first events.
BATCH_MAX: Final = 1000
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


def _empty_data() -> msgspec.Raw:
    return msgspec.Raw(b"{}")


_encoder: Final = msgspec.json.Encoder()


class EventItem(msgspec.Struct, kw_only=True):
    """One event of a REST upload (the `event` message without `stream`)."""

    seq: protocol.Seq
    kind: protocol.KindName
    t_ms: protocol.TimeMs
    lesson_id: protocol.LessonId | None = None
    # A factory, not a shared default: a Raw default cannot appear in the JSON schema.
    data: msgspec.Raw = msgspec.field(default_factory=_empty_data)


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
    """Who an event comes from: the headset (devices.id) and the user signed in on it."""

    org_id: str
    device_pk: str
    user_id: str | None


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
    that the whole class shares."""

    __slots__ = ("_space", "in_flight", "peer")

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
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
        self._queue: asyncio.Queue[tuple[NewEvent, AckSink] | None] = asyncio.Queue(capacity)
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
        return self._queue.qsize()

    def new_event(self, origin: Origin, msg: Event | EventItem, stream: str) -> NewEvent:
        """Check one event and turn it into what the writer stores (raises AppError)."""
        raw = msg.data
        blob = bytes(raw) if isinstance(raw, msgspec.Raw) else _encoder.encode(raw)
        return NewEvent(
            org_id=origin.org_id,
            device_pk=origin.device_pk,
            user_id=origin.user_id,
            stream=stream,
            seq=msg.seq,
            kind=msg.kind,
            t_ms=msg.t_ms,
            lesson_id=msg.lesson_id,
            data=event_data(blob, "$.data"),
            received_ms=self._clock.now_ms(),
        )

    async def submit(self, event: NewEvent, sink: AckSink) -> None:
        """Queue one event; waits while the queue is full (back-pressure), then `busy`."""
        if self._closing:
            raise AppError(503, "shutting_down", "the box is stopping; resend later")
        try:
            self._queue.put_nowait((event, sink))
            return
        except asyncio.QueueFull:
            pass
        try:
            await asyncio.wait_for(self._queue.put((event, sink)), self._admit_timeout_s)
        except TimeoutError:
            raise AppError(
                503, "busy", "the box is saving events slower than they arrive; resend later"
            ) from None

    async def accept(self, origin: Origin, msg: Event, sink: PeerAcks) -> None:
        """A headset's `event` message: checked, then queued (the WebSocket's plug point)."""
        event = self.new_event(origin, msg, msg.stream)
        await sink.admit(self._admit_timeout_s)
        try:
            await self.submit(event, sink)
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
        for event in events:
            await self.submit(event, receipt)
        await receipt.done.wait()
        return receipt

    # --- the writer ---------------------------------------------------------------------

    async def run(self) -> None:
        """The batch writer: runs until `close()` and the queue is drained."""
        queue = self._queue
        while True:
            first = await queue.get()
            batch: list[tuple[NewEvent, AckSink]] = []
            stop = first is None
            if first is not None:
                batch.append(first)
            stop = self._drain(batch) or stop
            if not stop and len(batch) < LINGER_BELOW:
                await asyncio.sleep(FLUSH_LINGER_S)
                stop = self._drain(batch) or stop
            if batch:
                await self._write(batch)
            if stop:
                # Whatever was queued behind the close marker still gets written.
                rest: list[tuple[NewEvent, AckSink]] = []
                self._drain(rest, limit=None)
                if rest:
                    await self._write(rest)
                return

    def _drain(self, batch: list[tuple[NewEvent, AckSink]], limit: int | None = BATCH_MAX) -> bool:
        queue = self._queue
        stop = False
        while (limit is None or len(batch) < limit) and not queue.empty():
            item = queue.get_nowait()
            if item is None:
                stop = True
            else:
                batch.append(item)
        return stop

    async def _write(self, batch: list[tuple[NewEvent, AckSink]]) -> None:
        events = [event for event, _ in batch]
        now, now_ms = self._clock.now(), self._clock.now_ms()
        try:
            async with self._db.write() as s:
                stored = await self._log.store(s, events, now, now_ms)
        except Exception:
            log.exception(
                "could not store a batch of %d events; they stay unacknowledged", len(batch)
            )
            self._log.rolled_back()
            self.failed_batches += 1
            for sink, count in _counts(batch).values():
                sink.failed(count)
            return
        self._log.committed(stored)
        self.batches_total += 1
        self.stored_total += len(stored.fresh)
        refused = {(e.device_pk, e.stream, e.seq) for e in stored.refused}
        per_sink: dict[int, tuple[AckSink, dict[str, int], int, list[tuple[str, int]]]] = {}
        for event, sink in batch:
            entry = per_sink.get(id(sink))
            if entry is None:
                entry = (sink, {}, 0, [])
            acks = entry[1]
            acks[event.stream] = stored.heads[event.key].acked
            rejected = entry[3]
            if refused and (event.device_pk, event.stream, event.seq) in refused:
                rejected.append((event.stream, event.seq))
            per_sink[id(sink)] = (sink, acks, entry[2] + 1, rejected)
        for sink, acks, count, rejected in per_sink.values():
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
        """Refuse new events, write what is queued, stop the writer (via the close marker)."""
        self._closing = True
        await self._queue.put(None)


def _counts(batch: list[tuple[NewEvent, AckSink]]) -> dict[int, tuple[AckSink, int]]:
    counts: dict[int, tuple[AckSink, int]] = {}
    for _, sink in batch:
        previous = counts.get(id(sink))
        counts[id(sink)] = (sink, 1 if previous is None else previous[1] + 1)
    return counts
