"""Login, logout and "who am I": HTTP in front of domain/auth.py."""

from __future__ import annotations

from aiohttp import web

from vrlms_edge.domain import auth
from vrlms_edge.keys import CLOCK, DB, SETTINGS
from vrlms_edge.web.routing import (
    ALL_ROLES,
    ANYONE,
    ApiRegistry,
    json_response,
    parse_body,
    principal_of,
)

routes = ApiRegistry()


@routes.route(
    "POST",
    "/api/login/",
    roles=ANYONE,
    summary="Log in with nickname + PIN (students, teachers) or password (teachers, admins)",
    tag="accounts",
    body=auth.LoginRequest,
    response=auth.LoginAnswer,
    errors=(400, 401, 403, 413, 422, 429, 503),
)
async def login(request: web.Request) -> web.Response:
    body = await parse_body(request, auth.LoginRequest)
    app = request.app
    answer = await auth.login(
        app[DB],
        auth.LoginPolicy.from_settings(app[SETTINGS]),
        body,
        client_addr=request.remote or "unknown",
        now=app[CLOCK].now(),
    )
    return json_response(answer)


@routes.route(
    "POST",
    "/api/logout/",
    roles=ALL_ROLES,
    summary="Revoke the token of this request",
    tag="accounts",
    status=204,
)
async def logout(request: web.Request) -> web.Response:
    await auth.logout(request.app[DB], principal_of(request), now=request.app[CLOCK].now())
    return web.Response(status=204)


@routes.route(
    "GET",
    "/api/me/",
    roles=ALL_ROLES,
    summary="The user, org and device behind the token",
    tag="accounts",
    response=auth.Me,
)
async def me(request: web.Request) -> web.Response:
    return json_response(await auth.whoami(request.app[DB], principal_of(request)))
