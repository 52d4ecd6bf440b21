"""GET /websocket/: the live classroom endpoint, plus GET /api/sessions/{id}/live and
GET /api/asyncapi.json.

The handler translates WebSocket to the live parts and back: it accepts every upgrade, then
checks Origin, token and device (closing 4403/4401/4403), sends `welcome`, joins the hub and
reads frames until the peer goes. Each frame goes to `live/dispatch.py`; everything sent goes
through the connection's queue (`live/connection.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from sqlalchemy import select

from vrlms_edge.domain.sessions import SessionState, load_controlled_session, state_of
from vrlms_edge.errors import not_found
from vrlms_edge.keys import BROADCAST, CLOCK, DB, FRAME_SINKS, HUB, SETTINGS
from vrlms_edge.live import protocol
from vrlms_edge.live.admission import Refused, admit
from vrlms_edge.live.asyncapi import asyncapi_document
from vrlms_edge.live.connection import CLOSE_GRACE_S, Connection
from vrlms_edge.live.dispatch import MAX_FRAME_BYTES, Closing, Dispatch, InboundLimits
from vrlms_edge.live.hub import LIVE_STATUSES, Hub, Membership, RosterEntry
from vrlms_edge.live.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHORIZED,
    ClassPicture,
    DeviceInfo,
    UserInfo,
    Welcome,
)
from vrlms_edge.live.sinks import FrameSinks
from vrlms_edge.store.models import (
    DeviceStatus,
    Enrollment,
    Role,
    User,
)
from vrlms_edge.web.routing import (
    SESSION_COOKIE,
    STAFF,
    ApiRegistry,
    bearer_token,
    json_response,
    principal_of,
)

log = logging.getLogger(__name__)

routes = ApiRegistry()


def install(app: web.Application) -> None:
    """Create the hub (the app's StateBroadcast) and wire the endpoint and its lifecycle."""
    hub = Hub(app[SETTINGS], app[CLOCK])
    app[HUB] = hub
    app[BROADCAST] = hub
    app[FRAME_SINKS] = FrameSinks()
    app.router.add_get("/websocket/", websocket)
    app.cleanup_ctx.append(live_ctx)

    async def close_sockets(app: web.Application) -> None:
        # on_shutdown runs before aiohttp waits for handlers: open sockets would hold it up.
        await app[HUB].close_all()

    app.on_shutdown.append(close_sockets)


async def live_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    hub.start(app[DB])
    try:
        yield
    finally:
        await hub.stop()


# --- admission ---------------------------------------------------------------------------------


def _origin_allowed(request: web.Request) -> bool:
    """Headsets send no Origin; a browser's Origin must be this box's own host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == request.host.lower()


def _token(request: web.Request) -> str | None:
    return (
        bearer_token(request) or request.query.get("token") or request.cookies.get(SESSION_COOKIE)
    )


def _welcome_session(membership: Membership) -> SessionState | None:
    live = [state for _, state in membership.states if state.status in LIVE_STATUSES]
    return max(live, key=lambda st: st.anchor_server_ms, default=None)


async def _refuse(ws: web.WebSocketResponse, code: int, reason: str) -> web.WebSocketResponse:
    try:
        async with asyncio.timeout(CLOSE_GRACE_S):
            await ws.close(code=code, message=reason.encode()[:120])
    except TimeoutError:
        pass
    return ws


# --- the endpoint ------------------------------------------------------------------------------


async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    clock = app[CLOCK]
    hub = app[HUB]
    ws = web.WebSocketResponse(
        autoping=False,  # pongs carry our RTT timestamps; pings are answered by the writer
        heartbeat=None,  # the hub's watchdog pings and drops silent peers
        compress=False,  # frames are encoded once for all; per-connection deflate undoes it
        max_msg_size=MAX_FRAME_BYTES,
        timeout=CLOSE_GRACE_S,
    )
    await ws.prepare(request)
    if not _origin_allowed(request):
        return await _refuse(ws, CLOSE_FORBIDDEN, "origin not allowed")
    admitted = await admit(app[DB], _token(request), now=clock.now())
    if isinstance(admitted, Refused):
        code = CLOSE_UNAUTHORIZED if admitted.unauthorized else CLOSE_FORBIDDEN
        return await _refuse(ws, code, admitted.reason)
    principal, device, membership = admitted.principal, admitted.device, admitted.membership

    conn = Connection(
        ws,
        request,
        principal,
        monotonic=clock.monotonic,
        device_pk=device.id if device is not None else None,
        device_label=device.device_id if device is not None else None,
    )
    hub.join(conn, membership)  # states published from here on are queued behind `welcome`
    try:
        conn.put_first(
            protocol.encode(
                Welcome(
                    protocol=protocol.PROTOCOL_VERSION,
                    server_ms=clock.now_ms(),
                    role=principal.role.value,
                    user=UserInfo(
                        id=principal.user_id,
                        nickname=principal.nickname,
                        display_name=principal.display_name,
                    ),
                    device=DeviceInfo(
                        id=device.id,
                        device_id=device.device_id,
                        name=device.name,
                        status=DeviceStatus(device.status).value,
                    )
                    if device is not None
                    else None,
                    session=_welcome_session(membership),
                    heartbeat_s=settings.heartbeat_s,
                )
            )
        )
        current = _welcome_session(membership)
        if principal.role == Role.student and current is not None:
            conn.session_id = current.session_id
        if principal.role != Role.student:
            for _, state in membership.states:
                conn.offer_state(state.session_id, state.rev, protocol.encode(state))
        conn.start_writer()
        conn.ping()  # a first RTT sample right away: a start may follow within a second
        await _read(conn, app)
    finally:
        hub.leave(conn)
        await conn.finished()
    return ws


async def _read(conn: Connection, app: web.Application) -> None:
    dispatch = Dispatch(
        db=app[DB], clock=app[CLOCK], broadcast=app[BROADCAST], hub=app[HUB], sinks=app[FRAME_SINKS]
    )
    limits = InboundLimits()
    clock = app[CLOCK]
    hub = app[HUB]
    student = conn.principal.role == Role.student
    ws = conn.ws
    while not conn.closing:
        msg = await ws.receive()
        t1 = round(clock.now_ms_float())
        conn.heard()
        try:
            if msg.type == WSMsgType.TEXT:
                await dispatch.text(conn, limits, msg.data, t1)
            elif msg.type == WSMsgType.BINARY:
                dispatch.binary(conn, limits, msg.data)
            elif msg.type == WSMsgType.PING:
                conn.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                conn.on_pong(msg.data)
            elif msg.type == WSMsgType.ERROR:
                exc = ws.exception()
                if isinstance(exc, aiohttp.WebSocketError):
                    # e.g. a frame above max_msg_size: aiohttp already closed with 1009
                    log.info("connection %s: %s", conn.id, exc)
                break
            else:  # CLOSE, CLOSING, CLOSED
                break
        except Closing as closing:
            log.info("closing connection %s: %s", conn.id, closing.reason)
            conn.close(closing.code, closing.reason)
            break
        if student:
            hub.seen(conn, t1)


# --- REST --------------------------------------------------------------------------------------


@routes.route(
    "GET",
    "/api/sessions/{session_id}/live",
    roles=STAFF,
    summary="Live picture of a session's students: presence, applied rev, skew, RTT, last seen",
    tag="live",
    response=ClassPicture,
    errors=(404,),
)
async def session_live(request: web.Request) -> web.Response:
    principal = principal_of(request)
    session_id = request.match_info["session_id"]
    app = request.app
    async with app[DB].read() as s:
        row = await load_controlled_session(s, principal, session_id)
        state = await state_of(s, row)
        roster_rows = await s.execute(
            select(User.id, User.nickname, User.display_name)
            .join(Enrollment, Enrollment.user_id == User.id)
            .where(
                Enrollment.class_id == row.class_id,
                Enrollment.deleted_at.is_(None),
                User.deleted_at.is_(None),
            )
        )
        roster = [RosterEntry(u, n, d) for u, n, d in roster_rows]
    hub: Hub = app[HUB]
    hub.ensure_roster(row.org_id, row.class_id, roster)
    picture = hub.picture(row.class_id, session_id)
    if picture is None:  # pragma: no cover - ensure_roster made the room
        raise not_found("session")
    picture.rev = state.rev
    return json_response(picture)


@routes.route(
    "GET",
    "/api/asyncapi.json",
    roles=None,
    summary="AsyncAPI 3.0 document of /websocket/ (from the message schemas)",
    tag="live",
    response=dict[str, Any],
)
async def asyncapi(request: web.Request) -> web.Response:
    return json_response(asyncapi_document(f"ws://{request.host}"))
