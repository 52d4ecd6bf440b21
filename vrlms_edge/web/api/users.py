"""Users over REST (domain/roster.py): admins create, disable and reset PIN/password; staff
can look users up (teachers enroll students)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from vrlms_edge.domain import auth, roster
from vrlms_edge.domain.roster import UserPage, UserView
from vrlms_edge.keys import DB
from vrlms_edge.web.api.common import PageQuery
from vrlms_edge.web.routing import (
    ADMIN,
    STAFF,
    ApiRegistry,
    json_response,
    org_answer,
    parse_body,
    principal_of,
    query_args,
)

routes = ApiRegistry()

Nickname = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Pin = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
RoleName = Literal["admin", "teacher", "student"]


class NewUser(msgspec.Struct, kw_only=True):
    """Students: `pin`. Teachers: `pin` and/or `password`. Admins: `password` (10+)."""

    role: RoleName
    nickname: Nickname
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    pin: Pin | None = None
    password: Password | None = None


class UserQuery(PageQuery, kw_only=True):
    role: RoleName | None = None


class PinReset(msgspec.Struct, kw_only=True):
    pin: Pin


class PasswordReset(msgspec.Struct, kw_only=True):
    password: Password


def _user_id(request: web.Request) -> str:
    return request.match_info["user_id"]


@routes.route(
    "GET",
    "/api/users/",
    roles=STAFF,
    summary="Users of the org by nickname, optionally of one role",
    tag="users",
    query=UserQuery,
    response=UserPage,
)
async def list_users(request: web.Request) -> web.Response:
    return await org_answer(request, roster.list_users, **query_args(request))


@routes.route(
    "GET",
    "/api/users/{user_id}/",
    roles=STAFF,
    summary="One user",
    tag="users",
    response=UserView,
)
async def get_user(request: web.Request) -> web.Response:
    return await org_answer(request, roster.get_user, _user_id(request))


@routes.route(
    "POST",
    "/api/users/",
    roles=ADMIN,
    summary="Create a user",
    tag="users",
    body=NewUser,
    response=UserView,
    status=201,
    errors=(409,),
)
async def create_user(request: web.Request) -> web.Response:
    body = await parse_body(request, NewUser)
    return await org_answer(
        request,
        roster.create_user,
        body.role,
        body.nickname,
        body.display_name,
        body.pin,
        body.password,
    )


@routes.route(
    "POST",
    "/api/users/{user_id}/disable/",
    roles=ADMIN,
    summary="Disable a login (its tokens stop working at once)",
    tag="users",
    response=UserView,
)
async def disable(request: web.Request) -> web.Response:
    return await org_answer(request, roster.disable_user, _user_id(request))


@routes.route(
    "POST",
    "/api/users/{user_id}/enable/",
    roles=ADMIN,
    summary="Enable a disabled login again",
    tag="users",
    response=UserView,
)
async def enable(request: web.Request) -> web.Response:
    return await org_answer(request, roster.enable_user, _user_id(request))


@routes.route(
    "POST",
    "/api/users/{user_id}/pin/",
    roles=ADMIN,
    summary="Reset a user's PIN (also lifts a login lockout)",
    tag="users",
    body=PinReset,
    response=UserView,
)
async def reset_pin(request: web.Request) -> web.Response:
    body = await parse_body(request, PinReset)
    org_id = principal_of(request).org_id
    view = await roster.set_pin(request.app[DB], org_id, _user_id(request), body.pin)
    await auth.clear_lockout(request.app[DB], org_id, view.nickname)
    return json_response(view)


@routes.route(
    "POST",
    "/api/users/{user_id}/password/",
    roles=ADMIN,
    summary="Reset a staff member's password (also lifts a login lockout)",
    tag="users",
    body=PasswordReset,
    response=UserView,
)
async def reset_password(request: web.Request) -> web.Response:
    body = await parse_body(request, PasswordReset)
    org_id = principal_of(request).org_id
    view = await roster.set_password(request.app[DB], org_id, _user_id(request), body.password)
    await auth.clear_lockout(request.app[DB], org_id, view.nickname)
    return json_response(view)
