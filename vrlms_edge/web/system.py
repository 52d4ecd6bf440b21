"""Box status: GET /api/health for machines and GET /index/ for people."""

from __future__ import annotations

import aiohttp_jinja2
import msgspec
from aiohttp import web
from sqlalchemy import func, select, text

from vrlms_edge import __version__
from vrlms_edge.keys import BOX, CLOCK, DB, STARTED
from vrlms_edge.store.models import Class, Device, Lesson, User
from vrlms_edge.web.routing import ANYONE, ApiRegistry, json_response

routes = ApiRegistry()


class BoxRef(msgspec.Struct):
    id: str
    name: str


class Health(msgspec.Struct):
    status: str
    version: str
    box: BoxRef
    db: str
    uptime_s: float
    server_ms: int


@routes.route(
    "GET",
    "/api/health",
    roles=ANYONE,
    summary="Liveness and version",
    tag="system",
    response=Health,
)
async def health(request: web.Request) -> web.Response:
    app = request.app
    try:
        async with app[DB].read() as s:
            await s.execute(text("SELECT 1"))
        db_status = "ok"
    except Exception:  # the answer is the point: say the database is down, do not 500
        db_status = "error"
    box = app[BOX]
    clock = app[CLOCK]
    body = Health(
        status="ok" if db_status == "ok" else "degraded",
        version=__version__,
        box=BoxRef(id=box.id, name=box.advertised_name),
        db=db_status,
        uptime_s=round(clock.monotonic() - app[STARTED], 3),
        server_ms=clock.now_ms(),
    )
    return json_response(body, status=200 if db_status == "ok" else 503)


async def index(request: web.Request) -> web.Response:
    app = request.app
    async with app[DB].read() as s:
        counts = {
            label: (
                await s.execute(
                    select(func.count()).select_from(model).where(model.deleted_at.is_(None))
                )
            ).scalar_one()
            for label, model in (
                ("users", User),
                ("devices", Device),
                ("classes", Class),
                ("lessons", Lesson),
            )
        }
    box = app[BOX]
    return aiohttp_jinja2.render_template(
        "index.html",
        request,
        {
            "box": box,
            "version": __version__,
            "counts": counts,
            "uptime_s": int(app[CLOCK].monotonic() - app[STARTED]),
        },
    )


def install_pages(app: web.Application) -> None:
    app.router.add_get("/index/", index, name="index")
    app.router.add_get("/", to_index)


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/index/")
