"""Where inbound headset frames go: the plug-in point for event ingest, status and views.

`app[FRAME_SINKS]` is one `FrameSinks`. The WebSocket dispatch (`live/dispatch.py`) has one
place per frame type and hands each accepted frame to it:

- `event` frames -> `await sinks.event(peer, Event)`; while no ingest is plugged in (None)
  the headset gets `error` `not_available`. The ingest queues the event and, once the batch
  is committed, sends `protocol.event_ack(stream, seq)` with `peer.send(...)`; it awaits only
  while its queue is full (back-pressure: this headset is not read meanwhile) and may raise
  `protocol.Refusal` (answered with `error`).
- `status` frames -> the hub keeps the newest per student (class picture), then every
  callable in `sinks.status` is called with (peer, Status).
- binary frames (one JPEG view) -> the hub keeps the newest per device (`Hub.frame_of`), then
  every callable in `sinks.frame` is called with (peer, jpeg bytes) first; one may raise
  `protocol.Refusal` (size, rate) and then the hub does not keep the frame.

The tracking part fills these in from its own cleanup context; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

from vrlms_edge.domain.principal import Principal
from vrlms_edge.live.protocol import Event, Status


class Peer(Protocol):
    """What a sink may use of a connection."""

    @property
    def principal(self) -> Principal: ...

    @property
    def device_pk(self) -> str | None: ...

    @property
    def session_id(self) -> str | None: ...

    def send(self, frame: str | bytes, key: Hashable | None = None) -> None: ...


EventSink = Callable[[Peer, Event], Awaitable[None]]
StatusSink = Callable[[Peer, Status], None]
JpegSink = Callable[[Peer, bytes], None]


@dataclass
class FrameSinks:
    event: EventSink | None = None
    status: list[StatusSink] = field(default_factory=list)
    frame: list[JpegSink] = field(default_factory=list)
