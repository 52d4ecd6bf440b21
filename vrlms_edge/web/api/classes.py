"""Classes and enrollment over REST (domain/roster.py). Who sees what: admins every class of
the org, teachers their own, students the ones they are enrolled in."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from vrlms_edge.domain import roster, sessions
from vrlms_edge.domain.roster import ClassPage, ClassView
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.store.models import Role
from vrlms_edge.web.api.common import Id, PageQuery, UserIds
from vrlms_edge.web.routing import (
    ADMIN,
    ALL_ROLES,
    STAFF,
    ApiRegistry,
    org_answer,
    parse_body,
    principal_of,
    query_args,
)

routes = ApiRegistry()

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class NewClass(msgspec.Struct, kw_only=True):
    name: Name
    teacher_id: Id | None = None


class ClassChange(msgspec.Struct, kw_only=True):
    """Absent fields stay; `teacher_id: null` removes the teacher."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    teacher_id: Id | msgspec.UnsetType | None = msgspec.UNSET


async def _visible(request: web.Request) -> str:
    """The path's class id once the caller may see that class (404/403 otherwise)."""
    class_id = request.match_info["class_id"]
    async with request.app[DB].read() as s:
        await sessions.load_visible_class(s, principal_of(request), class_id)
    return class_id


@routes.route(
    "GET",
    "/api/classes/",
    roles=ALL_ROLES,
    summary="Classes with teacher and students: teachers their own, students theirs, "
    "admins the org's",
    tag="classes",
    query=PageQuery,
    response=ClassPage,
)
async def list_classes(request: web.Request) -> web.Response:
    who = principal_of(request)
    return await org_answer(
        request,
        roster.list_classes,
        teacher_id=who.user_id if who.role == Role.teacher else None,
        student_id=who.user_id if who.role == Role.student else None,
        **query_args(request),
    )


@routes.route(
    "GET",
    "/api/classes/{class_id}/",
    roles=ALL_ROLES,
    summary="One class with its teacher and students",
    tag="classes",
    response=ClassView,
)
async def get_class(request: web.Request) -> web.Response:
    return await org_answer(request, roster.get_class, await _visible(request))


@routes.route(
    "POST",
    "/api/classes/",
    roles=ADMIN,
    summary="Create a class (name unique in the org)",
    tag="classes",
    body=NewClass,
    response=ClassView,
    status=201,
    errors=(404, 409),
)
async def create_class(request: web.Request) -> web.Response:
    body = await parse_body(request, NewClass)
    return await org_answer(request, roster.create_class, body.name, body.teacher_id)


@routes.route(
    "PATCH",
    "/api/classes/{class_id}/",
    roles=ADMIN,
    summary="Rename a class or change its teacher",
    tag="classes",
    body=ClassChange,
    response=ClassView,
    errors=(409,),
)
async def update_class(request: web.Request) -> web.Response:
    body = await parse_body(request, ClassChange)
    name = None if isinstance(body.name, msgspec.UnsetType) else body.name
    return await org_answer(
        request,
        roster.update_class,
        request.match_info["class_id"],
        name=name,
        teacher_id=body.teacher_id,
    )


@routes.route(
    "DELETE",
    "/api/classes/{class_id}/",
    roles=ADMIN,
    summary="Delete a class",
    tag="classes",
    status=204,
)
async def delete_class(request: web.Request) -> web.Response:
    now = request.app[CLOCK].now()
    return await org_answer(request, roster.delete_class, request.match_info["class_id"], now=now)


@routes.route(
    "POST",
    "/api/classes/{class_id}/enroll/",
    roles=STAFF,
    summary="Enroll students (teachers: in their own classes); already enrolled stay",
    tag="classes",
    body=UserIds,
    response=ClassView,
)
async def enroll(request: web.Request) -> web.Response:
    body = await parse_body(request, UserIds)
    return await org_answer(request, roster.enroll, await _visible(request), body.user_ids)


@routes.route(
    "POST",
    "/api/classes/{class_id}/unenroll/",
    roles=STAFF,
    summary="Remove students from a class (teachers: their own classes)",
    tag="classes",
    body=UserIds,
    response=ClassView,
)
async def unenroll(request: web.Request) -> web.Response:
    body = await parse_body(request, UserIds)
    class_id, now = await _visible(request), request.app[CLOCK].now()
    return await org_answer(request, roster.unenroll, class_id, body.user_ids, now=now)
