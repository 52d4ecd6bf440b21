"""Dashboard log in and log out (form fields `nickname` and `password`; a teacher's PIN works
in the password field too). The same login rules and lockout as POST /api/login/ apply."""

from __future__ import annotations

import secrets
from typing import Final

import aiohttp_jinja2
from aiohttp import web

from vrlms_edge.domain import auth
from vrlms_edge.domain.passwords import is_valid_pin
from vrlms_edge.errors import AppError
from vrlms_edge.keys import CLOCK, DB, LOGIN_GATE, SETTINGS
from vrlms_edge.store.models import Role
from vrlms_edge.web.pages.guard import (
    CSRF_FIELD,
    clear_session_cookie,
    session_principal,
    set_session_cookie,
)

STAFF_HOME: Final = {Role.admin: "/admin/", Role.teacher: "/dashboard/"}


def _safe_next(value: str) -> str:
    # Only same-site paths: never an open redirect.
    return value if value.startswith("/") and not value.startswith("//") else ""


def _render(request: web.Request, *, status: int = 200, **values: object) -> web.Response:
    context = {"next": "", "nickname": "", "login_error": None, "me": None, **values}
    response = aiohttp_jinja2.render_template("login.html", request, context)
    response.set_status(status)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    me = await session_principal(request)
    if me is not None and me.role in STAFF_HOME:
        raise web.HTTPFound(STAFF_HOME[me.role])
    return _render(request, next=_safe_next(request.query.get("next", "")))


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    nickname = str(form.get("nickname", "")).strip()
    secret = str(form.get("password", ""))
    next_path = _safe_next(str(form.get("next", "")))
    if not nickname or not secret or len(nickname) > 64 or len(secret) > 256:
        return _render(
            request,
            status=400,
            nickname=nickname[:64],
            next=next_path,
            login_error="Enter your nickname and password.",
        )
    app = request.app
    settings = app[SETTINGS]
    # Teachers may use their 4-digit PIN in the password field.
    as_pin = is_valid_pin(secret)
    try:
        answer = await auth.login(
            app[DB],
            auth.LoginPolicy.from_settings(settings),
            auth.LoginRequest(
                nickname=nickname,
                pin=secret if as_pin else None,
                password=None if as_pin else secret,
            ),
            client_addr=request.remote or "unknown",
            now=app[CLOCK].now(),
            gate=app[LOGIN_GATE],
            token_kind="web",
            ttl_s=settings.web_session_ttl_s,
        )
    except AppError as err:
        message = {
            "invalid_credentials": "Wrong nickname or password.",
            "locked_out": "Too many failed attempts. " + err.message,
        }.get(err.code, err.message)
        return _render(
            request, status=err.status, nickname=nickname, next=next_path, login_error=message
        )
    if answer.role not in STAFF_HOME:
        return _render(
            request,
            status=403,
            nickname=nickname,
            next=next_path,
            login_error="Students log in on the headset, not here.",
        )
    response = web.HTTPFound(next_path or STAFF_HOME[answer.role])
    set_session_cookie(response, request, answer.token)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    me = await session_principal(request)
    form = await request.post()
    if me is not None and me.csrf_token is not None:
        if not secrets.compare_digest(str(form.get(CSRF_FIELD, "")), me.csrf_token):
            raise web.HTTPForbidden(text="missing or wrong CSRF token; reload the page")
        await auth.logout(request.app[DB], me, now=request.app[CLOCK].now())
    response = web.HTTPFound("/login/")
    clear_session_cookie(response)
    raise response


def install(app: web.Application) -> None:
    app.router.add_get("/login/", login_form)
    app.router.add_post("/login/", login_submit)
    app.router.add_post("/logout/", logout)
