"""Lesson sessions over REST: create, lesson plan, schedule, list/detail and the teacher's
commands (start, pause, stop, launch, seek, attention), all through domain/sessions.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
from aiohttp import web

from vrlms_edge.domain import schedule, sessions
from vrlms_edge.domain.sessions import (
    MAX_LEAD_MS,
    MAX_POSITION_MS,
    MAX_SESSION_LESSONS,
    Action,
    Change,
    Id,
    SessionView,
)
from vrlms_edge.keys import BROADCAST, CLOCK, DB, SETTINGS
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

PositionMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_POSITION_MS)]
LeadMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_LEAD_MS)]


class SessionRef(msgspec.Struct, kw_only=True):
    session_id: Id


class SessionLessonRef(msgspec.Struct, kw_only=True):
    session_id: Id
    lesson_id: Id


class LessonOrder(msgspec.Struct, kw_only=True):
    session_id: Id
    lesson_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_SESSION_LESSONS)]


class StartBody(msgspec.Struct, kw_only=True):
    """Start (play): `lesson_id` if given, else the current lesson, else the first."""

    session_id: Id
    lesson_id: Id | None = None
    position_ms: PositionMs | None = None
    # How far ahead the common start is anchored; default: sized by the box.
    lead_ms: LeadMs | None = None


class LaunchBody(msgspec.Struct, kw_only=True):
    """Make the headsets open a lesson (held at `position_ms` until play)."""

    session_id: Id
    lesson_id: Id | None = None
    position_ms: PositionMs | None = None


class SeekBody(msgspec.Struct, kw_only=True):
    session_id: Id
    position_ms: PositionMs
    lead_ms: LeadMs | None = None


class AttentionBody(msgspec.Struct, kw_only=True):
    """ "Eyes on me": `on` true shows `message` on every headset; false clears it."""

    session_id: Id
    on: bool
    message: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class SessionUpdate(sessions.SessionPatch, kw_only=True):
    """POST /api/session/update/: absent fields stay as they are, null clears."""

    session_id: Id


class SessionList(msgspec.Struct, kw_only=True):
    sessions: list[SessionView]
    next_cursor: str | None


def _session_id(request: web.Request) -> str:
    return request.match_info["session_id"]


async def _command(request: web.Request, session_id: str, change: Change) -> web.Response:
    app = request.app
    view = await sessions.change_session(
        app[DB], app[CLOCK], app[BROADCAST], principal_of(request), session_id, change
    )
    return json_response(view)


# Errors of a command on a session: unknown (404), not yours (403), wrong state/no lesson (409).
COMMAND_ERRORS = (404, 409, 413, 422)


@routes.route(
    "POST",
    "/api/session/create/",
    roles=STAFF,
    summary="Create an idle session for a class, optionally scheduled",
    tag="sessions",
    body=sessions.NewSession,
    response=SessionView,
    status=201,
    errors=(404, 413, 422),
)
async def create(request: web.Request) -> web.Response:
    body = await parse_body(request, sessions.NewSession)
    app = request.app
    view = await sessions.create_session(app[DB], principal_of(request), body, now=app[CLOCK].now())
    return json_response(view, status=201)


@routes.route(
    "POST",
    "/api/session/addLesson/",
    roles=STAFF,
    summary="Append a lesson to the session's plan (no change if already there)",
    tag="sessions",
    body=SessionLessonRef,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def add_lesson(request: web.Request) -> web.Response:
    body = await parse_body(request, SessionLessonRef)
    view = await sessions.add_lesson(
        request.app[DB], principal_of(request), body.session_id, body.lesson_id
    )
    return json_response(view)


@routes.route(
    "POST",
    "/api/session/removeLesson/",
    roles=STAFF,
    summary="Take a lesson out of the session's plan",
    tag="sessions",
    body=SessionLessonRef,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def remove_lesson(request: web.Request) -> web.Response:
    body = await parse_body(request, SessionLessonRef)
    app = request.app
    view = await sessions.remove_lesson(
        app[DB], principal_of(request), body.session_id, body.lesson_id, now=app[CLOCK].now()
    )
    return json_response(view)


@routes.route(
    "POST",
    "/api/session/reorder/",
    roles=STAFF,
    summary="Reorder the session's lessons (list each exactly once)",
    tag="sessions",
    body=LessonOrder,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def reorder(request: web.Request) -> web.Response:
    body = await parse_body(request, LessonOrder)
    view = await sessions.reorder_lessons(
        request.app[DB], principal_of(request), body.session_id, body.lesson_ids
    )
    return json_response(view)


@routes.route(
    "POST",
    "/api/session/update/",
    roles=STAFF,
    summary="Change title, scheduled_start_at/end_at or auto_start",
    tag="sessions",
    body=SessionUpdate,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def update(request: web.Request) -> web.Response:
    body = await parse_body(request, SessionUpdate)
    view = await sessions.update_session(
        request.app[DB], principal_of(request), body.session_id, body
    )
    return json_response(view)


@routes.route(
    "PATCH",
    "/api/sessions/{session_id}/",
    roles=STAFF,
    summary="Change title, scheduled_start_at/end_at or auto_start",
    tag="sessions",
    body=sessions.SessionPatch,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def patch(request: web.Request) -> web.Response:
    body = await parse_body(request, sessions.SessionPatch)
    view = await sessions.update_session(
        request.app[DB], principal_of(request), _session_id(request), body
    )
    return json_response(view)


@routes.route(
    "POST",
    "/api/session/start/",
    roles=STAFF,
    summary="Play: every headset starts together lead_ms from now",
    tag="sessions",
    body=StartBody,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def start(request: web.Request) -> web.Response:
    body = await parse_body(request, StartBody)
    change = Change(
        action=Action.play,
        lesson_id=body.lesson_id,
        position_ms=body.position_ms,
        lead_ms=body.lead_ms,
    )
    return await _command(request, body.session_id, change)


@routes.route(
    "POST",
    "/api/session/pause/",
    roles=STAFF,
    summary="Pause a playing session",
    tag="sessions",
    body=SessionRef,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def pause(request: web.Request) -> web.Response:
    body = await parse_body(request, SessionRef)
    return await _command(request, body.session_id, Change(action=Action.pause))


@routes.route(
    "POST",
    "/api/session/stop/",
    roles=STAFF,
    summary="Stop a playing or paused session",
    tag="sessions",
    body=SessionRef,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def stop(request: web.Request) -> web.Response:
    body = await parse_body(request, SessionRef)
    return await _command(request, body.session_id, Change(action=Action.stop))


@routes.route(
    "POST",
    "/api/session/launch/",
    roles=STAFF,
    summary="Make every headset open a lesson of the session",
    tag="sessions",
    body=LaunchBody,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def launch(request: web.Request) -> web.Response:
    body = await parse_body(request, LaunchBody)
    change = Change(action=Action.launch, lesson_id=body.lesson_id, position_ms=body.position_ms)
    return await _command(request, body.session_id, change)


@routes.route(
    "POST",
    "/api/session/seek/",
    roles=STAFF,
    summary="Move the lesson position (playing or paused)",
    tag="sessions",
    body=SeekBody,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def seek(request: web.Request) -> web.Response:
    body = await parse_body(request, SeekBody)
    change = Change(action=Action.seek, position_ms=body.position_ms, lead_ms=body.lead_ms)
    return await _command(request, body.session_id, change)


@routes.route(
    "POST",
    "/api/session/attention/",
    roles=STAFF,
    summary='"Eyes on me" on or off',
    tag="sessions",
    body=AttentionBody,
    response=SessionView,
    errors=COMMAND_ERRORS,
)
async def attention(request: web.Request) -> web.Response:
    body = await parse_body(request, AttentionBody)
    change = Change(action=Action.attention, on=body.on, message=body.message)
    return await _command(request, body.session_id, change)


@routes.route(
    "GET",
    "/api/sessions/",
    roles=ALL_ROLES,
    summary="Sessions in your scope by start time: ?class_id=&from=&to= (a timetable), "
    "?upcoming=1 (what comes next)",
    tag="sessions",
    query=sessions.SessionFilter,
    response=SessionList,
    errors=(404, 422),
)
async def list_sessions(request: web.Request) -> web.Response:
    query = parse_query(request, sessions.SessionFilter)
    app = request.app
    found, next_cursor = await sessions.list_sessions(
        app[DB], principal_of(request), query, now=app[CLOCK].now()
    )
    return json_response(SessionList(sessions=found, next_cursor=next_cursor))


@routes.route(
    "GET",
    "/api/sessions/{session_id}/",
    roles=ALL_ROLES,
    summary="One session (students: of a class they are enrolled in)",
    tag="sessions",
    response=SessionView,
    errors=(404,),
)
async def detail(request: web.Request) -> web.Response:
    view = await sessions.get_session(request.app[DB], principal_of(request), _session_id(request))
    return json_response(view)


async def auto_start_ctx(app: web.Application) -> AsyncIterator[None]:
    """The auto start loop of scheduled sessions (cleanup_ctx; needs the database)."""
    settings = app[SETTINGS]
    task = asyncio.create_task(
        schedule.run_auto_starts(
            app[DB],
            app[CLOCK],
            lambda: app[BROADCAST],
            poll_s=settings.schedule_poll_s,
            grace_s=settings.auto_start_grace_s,
        ),
        name="auto-start",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
