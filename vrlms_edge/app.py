"""create_app(settings): the aiohttp application with every part wired by cleanup contexts.

Each part (database, ...) starts before the `yield` of its context and stops after it;
aiohttp unwinds only the parts that started, in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from vrlms_edge.config import Settings
from vrlms_edge.discovery.advertiser import mdns_ctx
from vrlms_edge.domain.box import ensure_box_identity
from vrlms_edge.keys import BOX, CLOCK, DB, OPENAPI, SETTINGS, TLS
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.live.tracking import tracking_ctx
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.store.integrity import ensure_sound_database
from vrlms_edge.sync import api as sync_api
from vrlms_edge.sync.context import sync_ctx
from vrlms_edge.systemd import watchdog_ctx
from vrlms_edge.tls import ensure_certificate
from vrlms_edge.web import openapi, pages, system, tracking, ws
from vrlms_edge.web.api import accounts as accounts_api
from vrlms_edge.web.api import catalog as catalog_api
from vrlms_edge.web.api import classes as classes_api
from vrlms_edge.web.api import devices as devices_api
from vrlms_edge.web.api import sessions as sessions_api
from vrlms_edge.web.api import timetable as timetable_api
from vrlms_edge.web.api import users as users_api
from vrlms_edge.web.application import base_application
from vrlms_edge.web.routing import ApiRegistry

log = logging.getLogger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def api_registries() -> list[ApiRegistry]:
    """Every API route table of the box, in one list (installed and documented together)."""
    return [
        system.routes,
        accounts_api.routes,
        catalog_api.routes,
        classes_api.routes,
        users_api.routes,
        devices_api.routes,
        sessions_api.routes,
        timetable_api.routes,
        openapi.routes,
        tracking.routes,
        ws.routes,
        sync_api.routes,
    ]


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.database_url_resolved
    if settings.sqlite_path is not None:
        # A corrupt file is moved aside so the box starts fresh instead of crash-looping.
        await asyncio.to_thread(ensure_sound_database, settings.sqlite_path, app[CLOCK].now())
    await asyncio.to_thread(migrate.upgrade, url, settings.sqlite_path)
    db = Database(url, sqlite_synchronous=settings.sqlite_synchronous)
    db.open_loop_writer()
    app[DB] = db
    app[BOX] = await ensure_box_identity(db, settings.box_name)
    try:
        yield
    finally:
        await db.dispose()


async def tls_ctx(app: web.Application) -> AsyncIterator[None]:
    """With the `tls` setting: the box's certificate in app[TLS] (serve and mDNS use it)."""
    settings = app[SETTINGS]
    if settings.tls:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        app[TLS] = await asyncio.to_thread(
            ensure_certificate, settings.data_dir, settings.box_name, app[CLOCK].now()
        )
        log.info("TLS certificate sha256 fingerprint %s", app[TLS].fingerprint)
    yield


def create_app(settings: Settings, *, clock: ServerClock | None = None) -> web.Application:
    app = base_application(settings, clock=clock)
    for registry in api_registries():
        registry.install(app)
    app[OPENAPI] = openapi.build_document(api_registries())
    system.install_pages(app)
    pages.install(app)
    app.cleanup_ctx.append(watchdog_ctx)
    app.cleanup_ctx.append(tls_ctx)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(tracking_ctx)
    ws.install(app)  # after the database: the live hub writes attendance
    app.cleanup_ctx.append(sessions_api.auto_start_ctx)
    if settings.mdns:
        app.cleanup_ctx.append(mdns_ctx)
    app.cleanup_ctx.append(sync_ctx)
    return app
