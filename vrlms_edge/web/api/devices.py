"""Headsets over REST (domain/devices.py): a headset announces itself, staff approve, block,
bind and unbind it."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from vrlms_edge.domain import auth, devices
from vrlms_edge.domain.devices import DevicePage, DeviceView
from vrlms_edge.keys import CLOCK, DB, SETTINGS
from vrlms_edge.web.api.common import Id, PageQuery
from vrlms_edge.web.routing import (
    ANYONE,
    STAFF,
    ApiRegistry,
    json_response,
    org_answer,
    parse_body,
    query_args,
)

routes = ApiRegistry()


class DeviceAnnouncement(msgspec.Struct, kw_only=True):
    """What a headset app reports about itself (before or after login)."""

    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    model: Annotated[str, msgspec.Meta(max_length=128)] = ""
    app_version: Annotated[str, msgspec.Meta(max_length=64)] = ""
    # Org slug; required when the box holds more than one org.
    org: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class DeviceStatusView(msgspec.Struct, kw_only=True):
    """What an (unauthenticated) headset learns about itself."""

    id: str
    device_id: str
    status: Literal["pending", "approved", "blocked"]


class DeviceQuery(PageQuery, kw_only=True):
    status: Literal["pending", "approved", "blocked"] | None = None


class Binding(msgspec.Struct, kw_only=True):
    user_id: Id


def _device(request: web.Request) -> str:
    return request.match_info["device"]


@routes.route(
    "POST",
    "/api/devices/register/",
    roles=ANYONE,
    summary="A headset announces device_id, model and app version: pending until approved",
    tag="devices",
    body=DeviceAnnouncement,
    response=DeviceStatusView,
    errors=(400, 429, 503),
)
async def register(request: web.Request) -> web.Response:
    body = await parse_body(request, DeviceAnnouncement)
    app = request.app
    org = await auth.resolve_org(app[DB], body.org)
    now = app[CLOCK].now()
    policy = auth.LoginPolicy.from_settings(app[SETTINGS])
    await auth.count_new_device(
        app[DB], policy, org.id, body.device_id, address=request.remote or "unknown", now=now
    )
    view = await devices.register_device(
        app[DB], org.id, body.device_id, body.model, body.app_version, seen_at=now
    )
    return json_response(DeviceStatusView(id=view.id, device_id=view.device_id, status=view.status))


@routes.route(
    "GET",
    "/api/devices/",
    roles=STAFF,
    summary="Headsets by device_id, optionally of one status",
    tag="devices",
    query=DeviceQuery,
    response=DevicePage,
)
async def list_devices(request: web.Request) -> web.Response:
    return await org_answer(request, devices.list_devices, **query_args(request))


@routes.route(
    "GET",
    "/api/devices/{device}/",
    roles=STAFF,
    summary="One headset (by its id or its device_id)",
    tag="devices",
    response=DeviceView,
)
async def get_device(request: web.Request) -> web.Response:
    return await org_answer(request, devices.get_device, _device(request))


@routes.route(
    "POST",
    "/api/devices/{device}/approve/",
    roles=STAFF,
    summary="Approve a headset (also lifts a block)",
    tag="devices",
    response=DeviceView,
)
async def approve(request: web.Request) -> web.Response:
    return await org_answer(request, devices.approve_device, _device(request))


@routes.route(
    "POST",
    "/api/devices/{device}/block/",
    roles=STAFF,
    summary="Block a headset and revoke its tokens",
    tag="devices",
    response=DeviceView,
)
async def block(request: web.Request) -> web.Response:
    now = request.app[CLOCK].now()
    return await org_answer(request, devices.block_device, _device(request), now=now)


@routes.route(
    "POST",
    "/api/devices/{device}/bind/",
    roles=STAFF,
    summary="Bind a headset to one user: it then admits only that user",
    tag="devices",
    body=Binding,
    response=DeviceView,
)
async def bind(request: web.Request) -> web.Response:
    body = await parse_body(request, Binding)
    return await org_answer(request, devices.bind_device, _device(request), body.user_id)


@routes.route(
    "POST",
    "/api/devices/{device}/unbind/",
    roles=STAFF,
    summary="Unbind a headset",
    tag="devices",
    response=DeviceView,
)
async def unbind(request: web.Request) -> web.Response:
    return await org_answer(request, devices.unbind_device, _device(request))
