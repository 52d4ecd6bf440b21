"""create_cloud_app(settings): the org server (role `cloud`) as an aiohttp application.

Stateless by design: everything a request needs (tokens, boxes, nonces, cursors) is in the
database, so any number of these processes can serve behind a load balancer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from vrlms_edge.cloud import api, pages
from vrlms_edge.cloud.store import OrgDatabase
from vrlms_edge.config import Settings
from vrlms_edge.keys import DB, SETTINGS
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store import migrate
from vrlms_edge.web.api import accounts as accounts_api
from vrlms_edge.web.api import catalog as catalog_api
from vrlms_edge.web.api import classes as classes_api
from vrlms_edge.web.api import users as users_api
from vrlms_edge.web.application import base_application
from vrlms_edge.web.routing import ADMIN, ApiRegistry

HERE = Path(__file__).parent


def cloud_database_url(settings: Settings) -> str:
    """VRLMS_DATABASE_URL (PostgreSQL in production); a SQLite file for local trials."""
    if settings.database_url:
        return settings.database_url
    return f"sqlite+aiosqlite:///{(settings.data_dir / 'cloud.sqlite3').resolve()}"


def admin_only(registry: ApiRegistry) -> ApiRegistry:
    """A box route table under the org server's guard: every authenticated route is for org
    admins only (teachers and students work on their box, not here)."""
    return ApiRegistry(
        routes=[
            dataclasses.replace(r, roles=ADMIN) if r.roles is not None else r
            for r in registry.routes
        ]
    )


def cloud_registries() -> list[ApiRegistry]:
    """The org server's route tables: its own, plus the box's login and roster/catalog
    authoring (same paths and schemas; writes land in the change feed boxes pull)."""
    shared = [accounts_api.routes, users_api.routes, classes_api.routes, catalog_api.routes]
    return [api.routes, *(admin_only(r) for r in shared)]


async def cloud_database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    url = cloud_database_url(settings)
    sqlite_path = Path(url.split(":///", 1)[1]) if url.startswith("sqlite") else None
    if sqlite_path is not None:
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(migrate.upgrade, url, sqlite_path)
    db = OrgDatabase(url)
    app[DB] = db
    try:
        yield
    finally:
        await db.dispose()


def create_cloud_app(settings: Settings, *, clock: ServerClock | None = None) -> web.Application:
    app = base_application(settings, clock=clock, templates=[HERE / "templates"])
    for registry in cloud_registries():
        registry.install(app)
    pages.install_pages(app)
    app.cleanup_ctx.append(cloud_database_ctx)
    return app
