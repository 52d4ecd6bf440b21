"""The API route table: one declaration per route says path, roles and schemas.

`api.route(...)` registers a handler with who may call it (`roles=None`: anyone) and the
msgspec types of its body, query and answer. The same declarations install the routes, check
roles before the handler runs, and generate the OpenAPI document, so a route cannot exist
without saying who may call it. A route that is one domain call for the caller's org is its
declaration plus `return await org_answer(request, domain_call, ...)`.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

import msgspec
from aiohttp import web

from vrlms_edge.domain.principal import Principal
from vrlms_edge.domain.tokens import resolve_token
from vrlms_edge.errors import AppError
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
P = ParamSpec("P")

# The caller of a guarded route, once authenticated (principal_of reads it).
PRINCIPAL: Final = web.RequestKey("vrlms.principal", Principal)
ANYONE: Final = None
ALL_ROLES: Final = frozenset(Role)
STAFF: Final = frozenset({Role.teacher, Role.admin})
ADMIN: Final = frozenset({Role.admin})
# The dashboard's cookie session (web/) may stand in for a bearer token.
SESSION_COOKIE: Final = "vrlms_session"
CSRF_HEADER: Final = "X-CSRF-Token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class ApiRoute:
    method: str
    path: str
    handler: Handler
    roles: frozenset[Role] | None
    summary: str
    tag: str
    body: type[Any] | None = None
    query: type[Any] | None = None
    response: type[Any] | None = None
    status: int = 200
    # Extra documented error statuses beyond the ones every authenticated route has.
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    # Also accept the token as `?token=` (feeds that calendar apps subscribe to).
    token_in_query: bool = False


# The declaration of the guarded route a request is for (org_answer answers by it).
ROUTE: Final = web.RequestKey("vrlms.route", ApiRoute)


@dataclass(slots=True)
class ApiRegistry:
    routes: list[ApiRoute] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        roles: Iterable[Role] | None,
        summary: str,
        tag: str,
        body: type[Any] | None = None,
        query: type[Any] | None = None,
        response: type[Any] | None = None,
        status: int = 200,
        errors: tuple[int, ...] = (),
        content_type: str = "application/json",
        token_in_query: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(
                ApiRoute(
                    method=method,
                    path=path,
                    handler=handler,
                    roles=None if roles is None else frozenset(roles),
                    summary=summary,
                    tag=tag,
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    errors=errors,
                    content_type=content_type,
                    token_in_query=token_in_query,
                )
            )
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for route in self.routes:
            app.router.add_route(route.method, route.path, _guarded(route))


def _guarded(route: ApiRoute) -> Handler:
    if route.roles is None:
        return route.handler
    roles = route.roles

    async def handler(request: web.Request) -> web.StreamResponse:
        query_token = request.query.get("token") if route.token_in_query else None
        principal = await authenticate(request, query_token)
        if principal.role not in roles:
            raise AppError(403, "forbidden", "your role may not call this endpoint")
        request[ROUTE] = route
        return await route.handler(request)

    handler.__name__ = route.handler.__name__
    return handler


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def authenticate(request: web.Request, token: str | None = None) -> Principal:
    """The caller behind the request's bearer token (or given token); 401 otherwise."""
    cached = request.get(PRINCIPAL)
    if isinstance(cached, Principal):
        return cached
    cookie = None if token or bearer_token(request) else request.cookies.get(SESSION_COOKIE)
    token = token or bearer_token(request) or cookie
    if not token:
        raise AppError(401, "unauthorized", "missing bearer token")
    app = request.app
    principal = await resolve_token(app[DB], token, now=app[CLOCK].now())
    if principal is None:
        raise AppError(401, "unauthorized", "invalid or expired token")
    if cookie is not None and request.method not in SAFE_METHODS:
        # A browser sends the cookie by itself; the CSRF header proves the page sent it.
        sent = request.headers.get(CSRF_HEADER, "")
        if not principal.csrf_token or not secrets.compare_digest(sent, principal.csrf_token):
            raise AppError(403, "csrf_failed", "missing or wrong CSRF token")
    request[PRINCIPAL] = principal
    return principal


def principal_of(request: web.Request) -> Principal:
    """The caller of a guarded route (authenticated before the handler ran)."""
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise AppError(401, "unauthorized", "missing bearer token")
    return principal


# --- bodies, queries and answers -------------------------------------------------------------


def _validation_error(exc: msgspec.ValidationError) -> AppError:
    text = str(exc)
    message, _, path = text.partition(" - at ")
    return AppError(
        422,
        "validation_error",
        message,
        detail={"path": path.strip("`") or "$"},
    )


async def parse_body(request: web.Request, schema: type[T]) -> T:
    raw = await request.read()
    if not raw:
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=schema)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise AppError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc


def parse_query(request: web.Request, schema: type[T]) -> T:
    values = {k: v for k, v in request.query.items() if v != ""}
    try:
        return msgspec.convert(values, schema, strict=False)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from exc


def query_args(request: web.Request) -> dict[str, Any]:
    """The query the route declares, parsed (422 on bad values), as keyword arguments."""
    schema = request[ROUTE].query
    if schema is None:
        raise TypeError(f"{request[ROUTE].path} declares no query")
    return msgspec.structs.asdict(parse_query(request, schema))


async def org_answer(
    request: web.Request,
    call: Callable[Concatenate[Database, str, P], Awaitable[object]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> web.Response:
    """The answer of a guarded route that is one domain call for the caller's org:
    `call(db, org_id, *args, **kwargs)` as JSON, with the status the route declares (a
    declared 204 answers no body), so declaration and answer cannot disagree."""
    found = await call(request.app[DB], principal_of(request).org_id, *args, **kwargs)
    status = request[ROUTE].status
    if status == 204:
        return web.Response(status=204)
    return json_response(found, status=status)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )
