"""Who may see a page: the dashboard's cookie session, role checks and CSRF on every POST.

Pages use the same tokens as the API (kind "web", HttpOnly SameSite=Strict cookie, Secure under
TLS). A page handler is wrapped by `page(roles)`: without a valid session the browser is sent
to the login page; with the wrong role it gets a 403 page; a POST must carry the session's
CSRF token in the form field `csrf`.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from vrlms_edge.domain.principal import Principal
from vrlms_edge.domain.tokens import resolve_token
from vrlms_edge.keys import CLOCK, DB, SETTINGS
from vrlms_edge.store.models import Role
from vrlms_edge.web.routing import SESSION_COOKIE

CSRF_FIELD: Final = "csrf"
PageHandler = Callable[[web.Request, "Page"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Page:
    """What a page handler knows about its caller."""

    me: Principal
    form: MultiDictProxy[Any]

    @property
    def csrf(self) -> str:
        return self.me.csrf_token or ""

    @property
    def is_admin(self) -> bool:
        return self.me.role == Role.admin

    def context(self, **values: Any) -> dict[str, Any]:
        return {"me": self.me, "csrf": self.csrf, **values}


def set_session_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    settings = request.app[SETTINGS]
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.web_session_ttl_s,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=settings.tls,
    )


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")


async def session_principal(request: web.Request) -> Principal | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await resolve_token(request.app[DB], token, now=request.app[CLOCK].now())


def redirect(location: str, *, ok: str | None = None, error: str | None = None) -> web.Response:
    """Post/redirect/get with an optional flash message in the query string."""
    params = {k: v for k, v in (("ok", ok), ("error", error)) if v}
    sep = "&" if "?" in location else "?"
    # A plain 302 answer (aiohttp deprecates returning its HTTPException objects).
    target = location + (sep + urlencode(params) if params else "")
    return web.Response(status=302, headers={"Location": target})


def page(roles: Iterable[Role]) -> Callable[[PageHandler], Callable[[web.Request], Any]]:
    allowed = frozenset(roles)

    def wrap(handler: PageHandler) -> Callable[[web.Request], Any]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            me = await session_principal(request)
            if me is None or me.csrf_token is None:
                raise web.HTTPFound("/login/?next=" + quote(request.path_qs, safe="/"))
            if me.role not in allowed:
                response = aiohttp_jinja2.render_template(
                    "forbidden.html", request, {"me": me, "csrf": me.csrf_token}
                )
                response.set_status(403)
                return response
            form: MultiDictProxy[Any] = MultiDictProxy(MultiDict())
            if request.method == "POST":
                form = await request.post()
                sent = str(form.get(CSRF_FIELD, ""))
                if not secrets.compare_digest(sent, me.csrf_token):
                    raise web.HTTPForbidden(text="missing or wrong CSRF token; reload the page")
            return await handler(request, Page(me=me, form=form))

        guarded.__name__ = handler.__name__
        return guarded

    return wrap
