"""Starts and stops the tracking parts of the box: the event batch writer, the live view and
the retention pruner (one cleanup context, after the database's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from vrlms_edge.domain.events import PRUNE_SLICE, prunable_before_ms, prune_slice
from vrlms_edge.keys import CLOCK, DB, INGEST, LIVEVIEW, SETTINGS
from vrlms_edge.live.ingest import EventIngest
from vrlms_edge.live.liveview import LiveView

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
    while True:
        try:
            await prune_old_events(app)
        except Exception:
            log.exception("retention pass failed; next pass in %.0f s", RETENTION_EVERY_S)
        await asyncio.sleep(RETENTION_EVERY_S)


async def tracking_ctx(app: web.Application) -> AsyncIterator[None]:
    ingest = EventIngest(app[DB], app[CLOCK])
    app[INGEST] = ingest
    live = LiveView(app[CLOCK])
    app[LIVEVIEW] = live
    ingest.observers.append(live.on_stored)
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
