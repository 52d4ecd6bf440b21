"""Tracking over HTTP: event uploads, results (JSON and CSV), session analytics, the raw
event export and the latest view frame of a headset. Handlers only translate; the rules live
in domain/results.py, domain/events.py, live/ingest.py and live/liveview.py."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Final

import msgspec
from aiohttp import web
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain import results
from vrlms_edge.domain.events import export_events
from vrlms_edge.domain.principal import Principal
from vrlms_edge.errors import AppError, forbidden, not_found
from vrlms_edge.keys import DB, INGEST, LIVEVIEW
from vrlms_edge.live.ingest import EventUpload, Origin, UploadAck
from vrlms_edge.live.liveview import teaches
from vrlms_edge.store.models import Device, DeviceStatus, Role
from vrlms_edge.web.routing import (
    ALL_ROLES,
    STAFF,
    ApiRegistry,
    json_response,
    parse_body,
    parse_query,
    principal_of,
)

routes = ApiRegistry()

# Page size of results lists: the default fits a class's results for a session.
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000


class ResultQuery(msgspec.Struct, kw_only=True):
    session_id: str | None = None
    class_id: str | None = None
    user_id: str | None = None
    lesson_id: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    cursor: str | None = None

    def wanted(self) -> results.ResultFilter:
        return results.ResultFilter(
            session_id=self.session_id,
            class_id=self.class_id,
            user_id=self.user_id,
            lesson_id=self.lesson_id,
        )


class ResultList(msgspec.Struct, kw_only=True):
    results: list[results.ResultOut]
    next_cursor: str | None = None


class ExportQuery(msgspec.Struct, kw_only=True):
    session_id: str | None = None
    device_id: str | None = None
    since: Annotated[int, msgspec.Meta(ge=0)] | None = None


async def find_device(s: AsyncSession, org_id: str, device_id: str) -> Device:
    """A device of the org by its id (devices.id) or by the id its app reports; else 404."""
    row = (
        await s.execute(
            select(Device).where(
                Device.org_id == org_id,
                Device.deleted_at.is_(None),
                or_(Device.id == device_id, Device.device_id == device_id),
            )
        )
    ).scalar()
    if row is None:
        raise not_found("device")
    return row


def _may_upload_for(principal: Principal, device: Device) -> bool:
    if principal.is_staff:
        return True
    return principal.device_pk == device.id or device.bound_user_id == principal.user_id


@routes.route(
    "POST",
    "/api/events/",
    roles=ALL_ROLES,
    summary="Upload events recorded offline (acknowledged after they are stored)",
    tag="tracking",
    body=EventUpload,
    response=UploadAck,
    errors=(404, 413, 422, 503),
)
async def upload_events(request: web.Request) -> web.Response:
    principal = principal_of(request)
    upload = await parse_body(request, EventUpload)
    async with request.app[DB].read() as s:
        device = await find_device(s, principal.org_id, upload.device_id)
    if not _may_upload_for(principal, device):
        raise forbidden("this device is not yours", "not_your_device")
    if device.status == DeviceStatus.blocked:
        raise forbidden("this device is blocked", "device_blocked")
    user_id = principal.user_id if principal.role == Role.student else device.bound_user_id
    origin = Origin(org_id=principal.org_id, device_pk=device.id, user_id=user_id)
    receipt = await request.app[INGEST].upload(origin, upload)
    if receipt.error:
        raise AppError(503, "not_stored", "the events could not be stored; resend them")
    acked = {upload.stream: receipt.acks.get(upload.stream, 0)}
    return json_response(UploadAck(acked=acked))


@routes.route(
    "GET",
    "/api/results/",
    roles=ALL_ROLES,
    summary="Results per student, lesson and session (teacher/admin: their scope; student: own)",
    tag="tracking",
    query=ResultQuery,
    response=ResultList,
    errors=(404,),
)
async def list_results(request: web.Request) -> web.Response:
    query = parse_query(request, ResultQuery)
    scope = results.scope_of(principal_of(request))
    async with request.app[DB].read() as s:
        rows, cursor = await results.list_results(
            s, scope, query.wanted(), limit=query.limit, after=query.cursor
        )
    return json_response(ResultList(results=rows, next_cursor=cursor))


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


@routes.route(
    "GET",
    "/api/results.csv",
    roles=ALL_ROLES,
    summary="The same results as GET /api/results/ (all pages) as CSV",
    tag="tracking",
    query=ResultQuery,
    errors=(404,),
    content_type="text/csv",
)
async def results_csv(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, ResultQuery)
    scope = results.scope_of(principal_of(request))
    db = request.app[DB]
    # Check scope and filters before the 200 goes out.
    async with db.read() as s:
        rows, cursor = await results.list_results(
            s, scope, query.wanted(), limit=MAX_LIMIT, after=query.cursor
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="results.csv"',
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(results.RESULT_COLUMNS)
    while True:
        for row in rows:
            writer.writerow([_csv_value(getattr(row, c)) for c in results.RESULT_COLUMNS])
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        if cursor is None:
            break
        async with db.read() as s:
            rows, cursor = await results.list_results(
                s, scope, query.wanted(), limit=MAX_LIMIT, after=cursor
            )
    await response.write_eof()
    return response


@routes.route(
    "GET",
    "/api/sessions/{session_id}/analytics",
    roles=STAFF,
    summary="Per student progress and time, gaze targets, clicks/actions timeline",
    tag="tracking",
    response=results.Analytics,
    errors=(404,),
)
async def session_analytics(request: web.Request) -> web.Response:
    scope = results.scope_of(principal_of(request))
    async with request.app[DB].read() as s:
        answer = await results.session_analytics(s, scope, request.match_info["session_id"])
    return json_response(answer)


@routes.route(
    "GET",
    "/api/events/export",
    roles=ALL_ROLES,
    summary="Raw events as NDJSON (one JSON object per line), scoped like results",
    tag="tracking",
    query=ExportQuery,
    errors=(404,),
    content_type="application/x-ndjson",
)
async def export(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, ExportQuery)
    principal = principal_of(request)
    scope = results.scope_of(principal)
    db = request.app[DB]
    device_pk = None
    async with db.read() as s:
        if query.session_id is not None:
            await results.check_session(s, scope, query.session_id)
        if query.device_id is not None:
            device_pk = (await find_device(s, principal.org_id, query.device_id)).id
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    encoder = msgspec.json.Encoder()
    pages = export_events(
        db, scope, session_id=query.session_id, device_pk=device_pk, since_ms=query.since
    )
    async for page in pages:
        await response.write(b"".join(encoder.encode(row) + b"\n" for row in page))
    await response.write_eof()
    return response


def _etag_matches(header: str, etag: str) -> bool:
    return any(tag.strip() in (etag, "*", f"W/{etag}") for tag in header.split(","))


@routes.route(
    "GET",
    "/api/devices/{device}/frame.jpg",
    roles=STAFF,
    summary="The headset's newest view frame (JPEG, kept in memory only); ETag / 304",
    tag="tracking",
    errors=(304, 404),
    content_type="image/jpeg",
)
async def device_frame(request: web.Request) -> web.Response:
    principal = principal_of(request)
    live = request.app[LIVEVIEW]
    async with request.app[DB].read() as s:
        device = await s.get(Device, request.match_info["device"])
        if device is None or device.org_id != principal.org_id or device.deleted_at is not None:
            raise not_found("device")
        if principal.role == Role.teacher:
            wearer = live.user_on(device.id) or device.bound_user_id
            if wearer is None or not await teaches(s, principal.user_id, wearer):
                raise forbidden("this headset is not in one of your classes", "not_your_class")
    latest = live.latest_frame(device.id)
    if latest is None:
        raise AppError(404, "no_frame", "this headset has not sent a view frame")
    jpeg, etag = latest
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if _etag_matches(request.headers.get("If-None-Match", ""), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=jpeg, content_type="image/jpeg", headers=headers)
