"""create_app(settings): the aiohttp application with every part wired by cleanup contexts.

Each part (database, ...) starts before the `yield` of its context and stops after it;
aiohttp unwinds only the parts that started, in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from vrlms_edge.config import Settings
from vrlms_edge.domain.box import ensure_box_identity
from vrlms_edge.domain.sessions import NoBroadcast
from vrlms_edge.keys import BOX, BROADCAST, CLOCK, DB, SETTINGS, STARTED
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.live.tracking import tracking_ctx
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.sync.context import sync_ctx
from vrlms_edge.web import system, tracking, ws
from vrlms_edge.web.middleware import error_middleware
from vrlms_edge.web.routing import ApiRegistry

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def api_registries() -> list[ApiRegistry]:
    """Every API route table of the box, in one list (installed and documented together)."""
    return [system.routes, tracking.routes, ws.routes]


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.database_url_resolved
    await asyncio.to_thread(migrate.upgrade, url, settings.sqlite_path)
    db = Database(url, sqlite_synchronous=settings.sqlite_synchronous)
    app[DB] = db
    app[BOX] = await ensure_box_identity(db, settings.box_name)
    try:
        yield
    finally:
        await db.dispose()


def create_app(settings: Settings, *, clock: ServerClock | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or ServerClock()
    app[STARTED] = app[CLOCK].monotonic()
    app[BROADCAST] = NoBroadcast(settings.start_lead_floor_ms)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.router.add_static("/static/", WEB_DIR / "static", name="static")
    for registry in api_registries():
        registry.install(app)
    system.install_pages(app)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(tracking_ctx)
    ws.install(app)  # after the database: the live hub writes attendance
    app.cleanup_ctx.append(sync_ctx)
    return app
