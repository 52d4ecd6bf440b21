"""The org server's server-rendered pages: admin sign-in, org-wide results (with the event
summaries behind them), the box list."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from vrlms_edge.cloud.api import AdminLogin, login_admin
from vrlms_edge.cloud.event_summaries import SummaryFilter, org_event_summaries
from vrlms_edge.cloud.orgs import list_boxes
from vrlms_edge.cloud.results import ResultFilter, org_results
from vrlms_edge.errors import AppError
from vrlms_edge.keys import DB, SETTINGS
from vrlms_edge.store.models import Org, Role
from vrlms_edge.web.routing import SESSION_COOKIE, authenticate


async def _admin(request: web.Request) -> tuple[str, Org]:
    try:
        principal = await authenticate(request)
    except AppError:
        raise web.HTTPFound("/cloud/") from None
    if principal.role != Role.admin:
        raise web.HTTPFound("/cloud/")
    async with request.app[DB].read() as s:
        org = await s.get(Org, principal.org_id)
    if org is None:
        raise web.HTTPFound("/cloud/")
    return principal.org_id, org


async def login_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("cloud_login.html", request, {"org": None})


async def login_form(request: web.Request) -> web.Response:
    form = await request.post()
    body = AdminLogin(
        org=str(form.get("org", "")),
        nickname=str(form.get("nickname", "")),
        password=str(form.get("password", "")),
    )
    try:
        token, *_ = await login_admin(request, body)
    except AppError as err:
        context: dict[str, Any] = {"org": None, "error": err.message}
        return aiohttp_jinja2.render_template("cloud_login.html", request, context, status=401)
    response = web.HTTPFound("/cloud/results")
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        max_age=request.app[SETTINGS].web_session_ttl_s,
        secure=request.secure,
    )
    raise response


async def results_page(request: web.Request) -> web.Response:
    org_id, org = await _admin(request)
    f = ResultFilter(
        box_id=request.query.get("box_id") or None,
        lesson_id=request.query.get("lesson_id") or None,
        user_id=request.query.get("user_id") or None,
    )
    found = await org_results(request.app[DB], org_id, f)
    summaries = await org_event_summaries(
        request.app[DB],
        org_id,
        SummaryFilter(box_id=f.box_id, lesson_id=f.lesson_id, user_id=f.user_id),
    )
    # A result row is one (student, lesson, session): its summary has the same key.
    events_of = {(e.user_id, e.lesson_id, e.session_id): e.events for e in summaries}
    context = {
        "org": org,
        "results": found,
        "limit": f.limit,
        "summaries": summaries,
        "events_of": events_of,
        "utc_time": _utc_time,
    }
    return aiohttp_jinja2.render_template("cloud_results.html", request, context)


def _utc_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def boxes_page(request: web.Request) -> web.Response:
    org_id, org = await _admin(request)
    found = await list_boxes(request.app[DB], org_id)
    return aiohttp_jinja2.render_template("cloud_boxes.html", request, {"org": org, "boxes": found})


def install_pages(app: web.Application) -> None:
    app.router.add_get("/cloud/", login_page)
    app.router.add_post("/cloud/login", login_form)
    app.router.add_get("/cloud/results", results_page)
    app.router.add_get("/cloud/boxes", boxes_page)
    app.router.add_get("/", to_cloud)


async def to_cloud(request: web.Request) -> web.Response:
    raise web.HTTPFound("/cloud/")
