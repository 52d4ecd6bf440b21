"""Starts and stops the tracking parts of the box: the event batch writer, the live view and
the retention pruner (one cleanup context, after the database's), and plugs them into the
WebSocket's frame sinks (live/sinks.py): `event` -> ingest, `status` and binary frames ->
the live view. The retention pass also forgets login throttle rows that count no more."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from vrlms_edge.domain.auth import LoginPolicy, prune_login_throttles
from vrlms_edge.domain.events import PRUNE_SLICE, prunable_before_ms, prune_slice
from vrlms_edge.errors import AppError
from vrlms_edge.keys import CLOCK, DB, FRAME_SINKS, HUB, INGEST, LIVEVIEW, SETTINGS
from vrlms_edge.live import protocol
from vrlms_edge.live.ingest import EventIngest, Origin, PeerAcks
from vrlms_edge.live.liveview import LiveView
from vrlms_edge.live.protocol import Event, Refusal
from vrlms_edge.live.sinks import FrameSinks, Peer

log = logging.getLogger(__name__)

# Retention runs this long after start-up, then this often: old events are not urgent, and
# the first minutes after a boot belong to the classroom.
RETENTION_FIRST_S: Final = 120.0
RETENTION_EVERY_S: Final = 3600.0
# Pause between two delete slices so the batch writer gets the database in between.
RETENTION_PAUSE_S: Final = 0.05


async def prune_old_events(app: web.Application) -> int:
    """Delete raw events past the retention age, one short transaction per slice."""
    db, clock, days = app[DB], app[CLOCK], app[SETTINGS].event_retention_days
    async with db.read() as s:
        before_ms = await prunable_before_ms(s, clock.now_ms(), days)
    total = 0
    while True:
        async with db.write() as s:
            removed = await prune_slice(s, before_ms=before_ms)
        total += removed
        if removed < PRUNE_SLICE:
            break
        await asyncio.sleep(RETENTION_PAUSE_S)
    if total:
        log.info("retention: removed %d events older than %d days", total, days)
    return total


async def _retention_loop(app: web.Application) -> None:
    await asyncio.sleep(RETENTION_FIRST_S)
    policy = LoginPolicy.from_settings(app[SETTINGS])
    while True:
        try:
            await prune_old_events(app)
            await prune_login_throttles(app[DB], policy, app[CLOCK].now())
        except Exception:
            log.exception("retention pass failed; next pass in %.0f s", RETENTION_EVERY_S)
        await asyncio.sleep(RETENTION_EVERY_S)


def plug_into_websocket(sinks: FrameSinks, ingest: EventIngest, live: LiveView) -> None:
    acks: weakref.WeakKeyDictionary[Peer, PeerAcks] = weakref.WeakKeyDictionary()

    async def on_event(peer: Peer, message: Event) -> None:
        sink = acks.get(peer)
        if sink is None:
            device_pk = peer.device_pk
            if device_pk is None:  # dispatch admits events from headsets only
                raise Refusal(protocol.FORBIDDEN, "events come from headsets (a device token)")
            origin = Origin(
                org_id=peer.principal.org_id, device_pk=device_pk, user_id=peer.principal.user_id
            )
            sink = acks[peer] = PeerAcks(peer, origin)
        try:
            await ingest.accept(message, sink)
        except AppError as err:
            # `data` that is not an object is a malformed message, as any other wrong field.
            code = protocol.INVALID_MESSAGE if err.code == "validation_error" else err.code
            raise Refusal(code, err.message) from None

    sinks.event = on_event
    sinks.status.append(live.on_status)
    sinks.frame.append(live.on_frame)


async def tracking_ctx(app: web.Application) -> AsyncIterator[None]:
    ingest = EventIngest(app[DB], app[CLOCK])
    app[INGEST] = ingest
    live = LiveView(app[CLOCK], app[HUB])
    app[LIVEVIEW] = live
    ingest.observers.append(live.on_stored)
    plug_into_websocket(app[FRAME_SINKS], ingest, live)
    writer = asyncio.create_task(ingest.run(), name="event-writer")
    retention = asyncio.create_task(_retention_loop(app), name="event-retention")
    try:
        yield
    finally:
        retention.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retention
        # Drain: everything queued is written (and acknowledged) before the database closes.
        await ingest.close()
        await writer
