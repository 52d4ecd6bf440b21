"""The org server's HTTP API: admin login, boxes, enrollment tokens, org-wide results and event
summaries, and the signed sync endpoints boxes call (enroll, pull, push)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web
from sqlalchemy import select, text

from vrlms_edge import __version__
from vrlms_edge.cloud.boxauth import authenticate_box
from vrlms_edge.cloud.event_summaries import OrgEventSummary, SummaryFilter, org_event_summaries
from vrlms_edge.cloud.exchange import MAX_PULL_PAGE, foreign_org, pull_page, push_items
from vrlms_edge.cloud.orgs import BoxView, enroll_box, issue_enrollment_token, list_boxes, org_ref
from vrlms_edge.cloud.results import OrgResult, ResultFilter, org_results
from vrlms_edge.domain.passwords import verify_secret_async
from vrlms_edge.domain.tokens import issue_token
from vrlms_edge.errors import AppError
from vrlms_edge.keys import CLOCK, DB, SETTINGS
from vrlms_edge.store.models import Box, Org, Role, User
from vrlms_edge.sync.messages import (
    EnrollAnswer,
    EnrollRequest,
    OrgRef,
    PullAnswer,
    PushAnswer,
    PushRequest,
)
from vrlms_edge.web.routing import (
    ADMIN,
    ANYONE,
    ApiRegistry,
    json_response,
    parse_body,
    parse_query,
    principal_of,
)

routes = ApiRegistry()


class AdminLogin(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    org: str
    nickname: str
    password: str


class UserRef(msgspec.Struct, kw_only=True):
    id: str
    nickname: str
    display_name: str


class AdminLoginAnswer(msgspec.Struct, kw_only=True):
    token: str
    role: str
    user: UserRef
    org: OrgRef
    expires_at: str


async def login_admin(request: web.Request, body: AdminLogin) -> tuple[str, User, Org, datetime]:
    app = request.app
    async with app[DB].read() as s:
        found = (
            await s.execute(
                select(User, Org)
                .join(Org, Org.id == User.org_id)
                .where(
                    Org.slug == body.org,
                    User.nickname == body.nickname,
                    User.deleted_at.is_(None),
                    Org.deleted_at.is_(None),
                )
            )
        ).first()
    user, org = (found[0], found[1]) if found is not None else (None, None)
    stored = user.password_hash if user is not None and user.role == Role.admin else None
    ok = await verify_secret_async(body.password, stored)
    if not ok or user is None or org is None or user.disabled:
        raise AppError(401, "invalid_credentials", "wrong org, nickname or password")
    token, row = await issue_token(
        app[DB], user, now=app[CLOCK].now(), ttl_s=app[SETTINGS].web_session_ttl_s
    )
    return token, user, org, row.expires_at


@routes.route(
    "POST",
    "/api/cloud/login/",
    roles=ANYONE,
    summary="Org admin login (password)",
    tag="cloud",
    body=AdminLogin,
    response=AdminLoginAnswer,
    errors=(401,),
)
async def admin_login(request: web.Request) -> web.Response:
    body = await parse_body(request, AdminLogin)
    token, user, org, expires_at = await login_admin(request, body)
    return json_response(
        AdminLoginAnswer(
            token=token,
            role=user.role,
            user=UserRef(id=user.id, nickname=user.nickname, display_name=user.display_name),
            org=org_ref(org),
            expires_at=expires_at.isoformat(),
        )
    )


class CloudHealth(msgspec.Struct, kw_only=True):
    status: str
    role: str
    version: str
    db: str


@routes.route(
    "GET",
    "/api/health",
    roles=ANYONE,
    summary="Liveness of this org server worker and its database (for the load balancer)",
    tag="cloud",
    response=CloudHealth,
    errors=(503,),
)
async def health(request: web.Request) -> web.Response:
    try:
        async with request.app[DB].read() as s:
            await s.execute(text("SELECT 1"))
        db_status = "ok"
    except Exception:  # the answer is the point: say the database is down, do not 500
        db_status = "error"
    ok = db_status == "ok"
    body = CloudHealth(
        status="ok" if ok else "degraded", role="cloud", version=__version__, db=db_status
    )
    return json_response(body, status=200 if ok else 503)


class BoxList(msgspec.Struct, kw_only=True):
    boxes: list[BoxView]


@routes.route(
    "GET",
    "/api/cloud/boxes/",
    roles=ADMIN,
    summary="The org's boxes with last sync, version and health",
    tag="cloud",
    response=BoxList,
)
async def boxes(request: web.Request) -> web.Response:
    principal = principal_of(request)
    return json_response(BoxList(boxes=await list_boxes(request.app[DB], principal.org_id)))


class TokenRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    ttl_s: int = 24 * 3600


class TokenAnswer(msgspec.Struct, kw_only=True):
    token: str
    expires_at: str


@routes.route(
    "POST",
    "/api/cloud/enrollment-tokens/",
    roles=ADMIN,
    summary="A one-time enrollment token for a new box of the org",
    tag="cloud",
    body=TokenRequest,
    response=TokenAnswer,
    status=201,
)
async def new_enrollment_token(request: web.Request) -> web.Response:
    body = await parse_body(request, TokenRequest)
    if not 60 <= body.ttl_s <= 30 * 24 * 3600:
        raise AppError(422, "validation_error", "ttl_s: 60 s .. 30 days")
    app = request.app
    token, row = await issue_enrollment_token(
        app[DB], principal_of(request).org_id, now=app[CLOCK].now(), ttl_s=body.ttl_s
    )
    return json_response(
        TokenAnswer(token=token, expires_at=row.expires_at.isoformat()), status=201
    )


class ResultList(msgspec.Struct, kw_only=True):
    results: list[OrgResult]


@routes.route(
    "GET",
    "/api/cloud/results/",
    roles=ADMIN,
    summary="Results of the whole org, across boxes",
    tag="cloud",
    query=ResultFilter,
    response=ResultList,
)
async def results(request: web.Request) -> web.Response:
    f = parse_query(request, ResultFilter)
    found = await org_results(request.app[DB], principal_of(request).org_id, f)
    return json_response(ResultList(results=found))


class EventSummaryList(msgspec.Struct, kw_only=True):
    summaries: list[OrgEventSummary]


@routes.route(
    "GET",
    "/api/cloud/event-summaries/",
    roles=ADMIN,
    summary="Per session, student and lesson event counts of the whole org, across boxes",
    tag="cloud",
    query=SummaryFilter,
    response=EventSummaryList,
)
async def event_summaries(request: web.Request) -> web.Response:
    f = parse_query(request, SummaryFilter)
    found = await org_event_summaries(request.app[DB], principal_of(request).org_id, f)
    return json_response(EventSummaryList(summaries=found))


# --- the box-facing sync endpoints ---------------------------------------------------------


@routes.route(
    "POST",
    "/api/sync/enroll",
    roles=ANYONE,
    summary="A box spends a one-time token to register its public key",
    tag="sync",
    body=EnrollRequest,
    response=EnrollAnswer,
    errors=(403, 409),
)
async def enroll(request: web.Request) -> web.Response:
    body = await parse_body(request, EnrollRequest)
    answer = await enroll_box(request.app[DB], body, now=request.app[CLOCK].now())
    return json_response(answer)


async def signed_box(request: web.Request) -> tuple[Box, bytes]:
    body = await request.read()
    app = request.app
    box = await authenticate_box(
        app[DB], app[CLOCK], request.method, request.raw_path, request.headers, body
    )
    return box, body


class PullQuery(msgspec.Struct, kw_only=True):
    cursor: int = 0
    limit: int = 200
    # Optional: the org the box believes it pulls; another org is refused.
    org: str | None = None


@routes.route(
    "GET",
    "/api/sync/pull",
    roles=ANYONE,
    summary="Roster and catalog changes since the cursor (signed by the box)",
    tag="sync",
    query=PullQuery,
    response=PullAnswer,
    errors=(401, 403),
)
async def pull(request: web.Request) -> web.Response:
    box, _ = await signed_box(request)
    q = parse_query(request, PullQuery)
    if q.org is not None and q.org != box.org_id:
        raise foreign_org()
    if q.cursor < 0 or not 1 <= q.limit <= MAX_PULL_PAGE:
        raise AppError(422, "validation_error", f"cursor >= 0, limit 1..{MAX_PULL_PAGE}")
    return json_response(await pull_page(request.app[DB], box, q.cursor, q.limit))


@routes.route(
    "POST",
    "/api/sync/push",
    roles=ANYONE,
    summary="Box-authored rows, upserted by id; answers what the org server holds",
    tag="sync",
    body=PushRequest,
    response=PushAnswer,
    errors=(401, 403),
)
async def push(request: web.Request) -> web.Response:
    box, raw = await signed_box(request)
    try:
        body = msgspec.json.decode(raw or b"{}", type=PushRequest)
    except msgspec.ValidationError as exc:
        raise AppError(422, "validation_error", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise AppError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
    held, missing = await push_items(request.app[DB], box, body, now=request.app[CLOCK].now())
    return json_response(PushAnswer(held=held, missing=missing))
