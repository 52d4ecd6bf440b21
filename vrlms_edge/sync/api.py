"""The box's sync endpoints for its admins: where sync stands (and whether the roster is
managed by an org server, so the admin UI can say why it is read-only), and "sync now"."""

from __future__ import annotations

import msgspec
from aiohttp import web

from vrlms_edge.keys import DB, SYNC
from vrlms_edge.sync.worker import SyncStatus, sync_status
from vrlms_edge.web.routing import ADMIN, ApiRegistry, json_response

routes = ApiRegistry()


class BoxSyncStatus(msgspec.Struct, kw_only=True):
    # True on an enrolled box: users, classes and the catalog are edited on the org server.
    managed_by_org_server: bool
    sync: SyncStatus


@routes.route(
    "GET",
    "/api/sync/status",
    roles=ADMIN,
    summary="Sync with the org server: enrollment, stage, cursor, outbox, last error",
    tag="sync",
    response=BoxSyncStatus,
)
async def status(request: web.Request) -> web.Response:
    current = await sync_status(request.app[DB])
    return json_response(BoxSyncStatus(managed_by_org_server=current.enrolled, sync=current))


@routes.route(
    "POST",
    "/api/sync/now",
    roles=ADMIN,
    summary="Ask the sync worker for a run now (answers at once; the run is in the background)",
    tag="sync",
    status=202,
)
async def now(request: web.Request) -> web.Response:
    request.app[SYNC].wake()
    return web.Response(status=202)
