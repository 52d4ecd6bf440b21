"""Courses, modules and lessons over REST: read for everyone in the org, write for admins
(domain/catalog.py does the work)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from vrlms_edge.domain import catalog
from vrlms_edge.domain.catalog import CourseView, LessonPage, LessonView, ModuleView
from vrlms_edge.domain.paging import clamp_limit, decode_cursor, encode_cursor
from vrlms_edge.errors import AppError
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.web.api.common import Id, PageQuery
from vrlms_edge.web.routing import (
    ADMIN,
    ALL_ROLES,
    ApiRegistry,
    json_response,
    org_answer,
    parse_body,
    parse_query,
    principal_of,
    query_args,
)

routes = ApiRegistry()

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Position = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Duration = Annotated[int, msgspec.Meta(ge=0, le=7 * 24 * 3600)]
ApkPackage = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=10_000)]


class CoursePage(msgspec.Struct, kw_only=True):
    courses: list[CourseView]
    next_cursor: str | None = None


class NewCourse(msgspec.Struct, kw_only=True):
    title: Title
    description: Description = ""
    position: Position | None = None


class CourseChange(msgspec.Struct, kw_only=True):
    title: Title | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    position: Position | msgspec.UnsetType = msgspec.UNSET


class NewModule(msgspec.Struct, kw_only=True):
    course_id: Id
    title: Title
    position: Position | None = None


class ModuleChange(msgspec.Struct, kw_only=True):
    title: Title | msgspec.UnsetType = msgspec.UNSET
    position: Position | msgspec.UnsetType = msgspec.UNSET
    course_id: Id | msgspec.UnsetType = msgspec.UNSET


class NewLesson(msgspec.Struct, kw_only=True):
    module_id: Id
    title: Title
    # The Android package the headset opens, e.g. com.example.solarsystem.
    apk_package: ApkPackage
    # Launch parameters handed to the lesson app (scene, language, ...).
    launch: dict[str, Any] = {}
    duration_s: Duration | None = None
    position: Position | None = None


class LessonChange(msgspec.Struct, kw_only=True):
    title: Title | msgspec.UnsetType = msgspec.UNSET
    apk_package: ApkPackage | msgspec.UnsetType = msgspec.UNSET
    launch: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    duration_s: Duration | msgspec.UnsetType | None = msgspec.UNSET
    position: Position | msgspec.UnsetType = msgspec.UNSET
    module_id: Id | msgspec.UnsetType = msgspec.UNSET


class LessonQuery(PageQuery, kw_only=True):
    course_id: Id | None = None
    module_id: Id | None = None


def _offset(cursor: str | None) -> int:
    """The position an offset cursor (catalog lists) points at; 422 for any other cursor."""
    after = decode_cursor(cursor, 1)
    if after is None:
        return 0
    if not isinstance(after[0], int) or after[0] < 0:
        raise AppError(422, "bad_cursor", "cursor is not one this list handed out")
    return after[0]


# --- courses -----------------------------------------------------------------------------------


@routes.route(
    "GET",
    "/api/courses/",
    roles=ALL_ROLES,
    summary="The catalog: courses with their modules and lessons, in order",
    tag="catalog",
    query=PageQuery,
    response=CoursePage,
)
async def list_courses(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    size = clamp_limit(query.limit)
    offset = _offset(query.cursor)
    tree = await catalog.course_tree(request.app[DB], principal_of(request).org_id)
    page = tree[offset : offset + size]
    more = offset + size < len(tree)
    return json_response(
        CoursePage(courses=page, next_cursor=encode_cursor(offset + size) if more else None)
    )


@routes.route(
    "GET",
    "/api/courses/{course_id}/",
    roles=ALL_ROLES,
    summary="One course with its modules and lessons",
    tag="catalog",
    response=CourseView,
)
async def get_course(request: web.Request) -> web.Response:
    return await org_answer(request, catalog.get_course, request.match_info["course_id"])


@routes.route(
    "POST",
    "/api/courses/",
    roles=ADMIN,
    summary="Create a course",
    tag="catalog",
    body=NewCourse,
    response=CourseView,
    status=201,
)
async def create_course(request: web.Request) -> web.Response:
    body = await parse_body(request, NewCourse)
    return await org_answer(
        request, catalog.create_course, body.title, body.description, body.position
    )


@routes.route(
    "PATCH",
    "/api/courses/{course_id}/",
    roles=ADMIN,
    summary="Change a course (absent fields stay)",
    tag="catalog",
    body=CourseChange,
    response=CourseView,
)
async def update_course(request: web.Request) -> web.Response:
    body = await parse_body(request, CourseChange)
    return await org_answer(
        request,
        catalog.update_course,
        request.match_info["course_id"],
        title=body.title,
        description=body.description,
        position=body.position,
    )


@routes.route(
    "DELETE",
    "/api/courses/{course_id}/",
    roles=ADMIN,
    summary="Delete a course with its modules and lessons",
    tag="catalog",
    status=204,
)
async def delete_course(request: web.Request) -> web.Response:
    now = request.app[CLOCK].now()
    return await org_answer(
        request, catalog.delete_course, request.match_info["course_id"], now=now
    )


# --- modules -----------------------------------------------------------------------------------


@routes.route(
    "POST",
    "/api/modules/",
    roles=ADMIN,
    summary="Create a module in a course",
    tag="catalog",
    body=NewModule,
    response=ModuleView,
    status=201,
    errors=(404,),
)
async def create_module(request: web.Request) -> web.Response:
    body = await parse_body(request, NewModule)
    return await org_answer(
        request, catalog.create_module, body.course_id, body.title, body.position
    )


@routes.route(
    "PATCH",
    "/api/modules/{module_id}/",
    roles=ADMIN,
    summary="Rename, reorder or move a module",
    tag="catalog",
    body=ModuleChange,
    response=ModuleView,
)
async def update_module(request: web.Request) -> web.Response:
    body = await parse_body(request, ModuleChange)
    return await org_answer(
        request,
        catalog.update_module,
        request.match_info["module_id"],
        title=body.title,
        position=body.position,
        course_id=body.course_id,
    )


@routes.route(
    "DELETE",
    "/api/modules/{module_id}/",
    roles=ADMIN,
    summary="Delete a module with its lessons",
    tag="catalog",
    status=204,
)
async def delete_module(request: web.Request) -> web.Response:
    now = request.app[CLOCK].now()
    return await org_answer(
        request, catalog.delete_module, request.match_info["module_id"], now=now
    )


# --- lessons -----------------------------------------------------------------------------------


@routes.route(
    "GET",
    "/api/lessons/",
    roles=ALL_ROLES,
    summary="Lessons in catalog order, optionally of one course or module",
    tag="catalog",
    query=LessonQuery,
    response=LessonPage,
)
async def list_lessons(request: web.Request) -> web.Response:
    query = query_args(request)
    _offset(query["cursor"])  # refuse a foreign cursor before the catalog reads it
    return await org_answer(request, catalog.list_lessons, **query)


@routes.route(
    "GET",
    "/api/lessons/{lesson_id}/",
    roles=ALL_ROLES,
    summary="One lesson (apk_package and launch parameters)",
    tag="catalog",
    response=LessonView,
)
async def get_lesson(request: web.Request) -> web.Response:
    return await org_answer(request, catalog.get_lesson, request.match_info["lesson_id"])


@routes.route(
    "POST",
    "/api/lessons/",
    roles=ADMIN,
    summary="Create a lesson in a module",
    tag="catalog",
    body=NewLesson,
    response=LessonView,
    status=201,
    errors=(404,),
)
async def create_lesson(request: web.Request) -> web.Response:
    body = await parse_body(request, NewLesson)
    return await org_answer(
        request,
        catalog.create_lesson,
        body.module_id,
        body.title,
        body.apk_package,
        body.launch,
        body.duration_s,
        body.position,
    )


@routes.route(
    "PATCH",
    "/api/lessons/{lesson_id}/",
    roles=ADMIN,
    summary="Change a lesson (absent fields stay)",
    tag="catalog",
    body=LessonChange,
    response=LessonView,
)
async def update_lesson(request: web.Request) -> web.Response:
    body = await parse_body(request, LessonChange)
    return await org_answer(
        request,
        catalog.update_lesson,
        request.match_info["lesson_id"],
        title=body.title,
        apk_package=body.apk_package,
        launch=body.launch,
        duration_s=body.duration_s,
        position=body.position,
        module_id=body.module_id,
    )


@routes.route(
    "DELETE",
    "/api/lessons/{lesson_id}/",
    roles=ADMIN,
    summary="Delete a lesson",
    tag="catalog",
    status=204,
)
async def delete_lesson(request: web.Request) -> web.Response:
    now = request.app[CLOCK].now()
    return await org_answer(
        request, catalog.delete_lesson, request.match_info["lesson_id"], now=now
    )
