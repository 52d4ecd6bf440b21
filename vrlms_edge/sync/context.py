"""The box's sync worker as a cleanup_ctx part: started with the app, stopped before the
database closes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from vrlms_edge.keys import CLOCK, DB, SETTINGS, SYNC
from vrlms_edge.sync.worker import SyncWorker


async def sync_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    worker = SyncWorker(app[DB], settings, app[CLOCK])
    app[SYNC] = worker
    if settings.sync_worker:
        worker.start()
    try:
        yield
    finally:
        await worker.stop()
