"""The teacher dashboard: classes, timetable, session builder, live class view, devices.

Structure is server-rendered; the live parts (control bar, student tiles, presence) are small
JS modules under static/js/ that talk to the same REST API and WebSocket the headsets use.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp_jinja2
import msgspec
from aiohttp import web

from vrlms_edge.domain import catalog, devices, results, roster, sessions
from vrlms_edge.domain.sessions import NewSession, SessionFilter, SessionPatch, SessionView
from vrlms_edge.errors import AppError
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.store.models import Role
from vrlms_edge.web.pages.charts import charts_of
from vrlms_edge.web.pages.forms import Action, apply, dispatch, field, flash
from vrlms_edge.web.pages.guard import Page, page, redirect

STAFF = (Role.teacher, Role.admin)


def _when(p: Page, name: str) -> datetime | None:
    """A datetime-local form value, in the browser's zone (the form sends its UTC offset)."""
    raw = field(p, name)
    if not raw:
        return None
    try:
        local = datetime.fromisoformat(raw)
        offset_min = int(field(p, "tz_offset_min") or "0")
    except ValueError as exc:
        raise AppError(422, "validation_error", f"{name}: not a date and time") from exc
    if local.tzinfo is not None:
        return local.astimezone(UTC)
    # JS getTimezoneOffset(): minutes to add to local time to get UTC.
    return (local + timedelta(minutes=offset_min)).replace(tzinfo=UTC)


def _week(now: datetime) -> tuple[datetime, datetime]:
    start = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=7)


async def _my_classes(request: web.Request, p: Page) -> list[roster.ClassView]:
    teacher = p.me.user_id if p.me.role == Role.teacher else None
    page_ = await roster.list_classes(request.app[DB], p.me.org_id, teacher_id=teacher, limit=500)
    return page_.classes


async def _sessions(request: web.Request, p: Page, **query: Any) -> list[SessionView]:
    found, _ = await sessions.list_sessions(
        request.app[DB],
        p.me,
        msgspec.convert({"limit": 500, **query}, SessionFilter),
        now=request.app[CLOCK].now(),
    )
    return found


@page(STAFF)
async def home(request: web.Request, p: Page) -> web.StreamResponse:
    now = request.app[CLOCK].now()
    week_start, week_end = _week(now)
    all_sessions = await _sessions(request, p)
    today = now.date()
    scheduled = [s for s in all_sessions if s.scheduled_start_at is not None]
    return aiohttp_jinja2.render_template(
        "dashboard/home.html",
        request,
        p.context(
            classes=await _my_classes(request, p),
            today=[s for s in scheduled if s.scheduled_start_at.date() == today],  # type: ignore[union-attr]
            week=[
                s
                for s in scheduled
                if week_start <= s.scheduled_start_at < week_end  # type: ignore[operator]
            ],
            unscheduled=[s for s in all_sessions if s.scheduled_start_at is None],
            live=[s for s in all_sessions if s.state.status in ("playing", "paused")],
            **flash(request),
        ),
    )


@page(STAFF)
async def new_session(request: web.Request, p: Page) -> web.StreamResponse:
    back = field(p, "back") or "/dashboard/"
    try:
        view = await sessions.create_session(
            request.app[DB],
            p.me,
            NewSession(
                class_id=field(p, "class_id"),
                title=field(p, "title") or None,
                scheduled_start_at=_when(p, "start"),
                scheduled_end_at=_when(p, "end"),
                auto_start=bool(p.form.get("auto_start")),
            ),
            now=request.app[CLOCK].now(),
        )
    except AppError as err:
        return redirect(back, error=err.message)
    return redirect(f"/dashboard/sessions/{view.id}", ok="session created: add its lessons")


@page(STAFF)
async def class_page(request: web.Request, p: Page) -> web.StreamResponse:
    class_id = request.match_info["class_id"]
    try:
        class_sessions = await _sessions(request, p, class_id=class_id)
        klass = await roster.get_class(request.app[DB], p.me.org_id, class_id)
    except AppError as err:
        raise web.HTTPNotFound(text=err.message) from None
    return aiohttp_jinja2.render_template(
        "dashboard/class.html",
        request,
        p.context(klass=klass, sessions=class_sessions, **flash(request)),
    )


@page(STAFF)
async def session_page(request: web.Request, p: Page) -> web.StreamResponse:
    session_id = request.match_info["session_id"]
    db = request.app[DB]
    try:
        view = await sessions.get_session(db, p.me, session_id)
    except AppError as err:
        raise web.HTTPNotFound(text=err.message) from None
    klass = await roster.get_class(db, p.me.org_id, view.class_id)
    pending = await devices.list_devices(db, p.me.org_id, status="pending", limit=100)
    return aiohttp_jinja2.render_template(
        "dashboard/session.html",
        request,
        p.context(
            session=view,
            klass=klass,
            courses=await catalog.course_tree(db, p.me.org_id),
            state_json=msgspec.json.encode(view.state).decode(),
            students_json=msgspec.json.encode(klass.students).decode(),
            pending_devices=len(pending.devices),
            **flash(request),
        ),
    )


@page(STAFF)
async def session_post(request: web.Request, p: Page) -> web.StreamResponse:
    session_id = request.match_info["session_id"]
    back = f"/dashboard/sessions/{session_id}"
    db = request.app[DB]
    me = p.me

    async def add(p: Page) -> str:
        await sessions.add_lesson(db, me, session_id, field(p, "lesson_id"))
        return "lesson added"

    async def remove(p: Page) -> str:
        await sessions.remove_lesson(
            db, me, session_id, field(p, "lesson_id"), now=request.app[CLOCK].now()
        )
        return "lesson removed"

    async def move(p: Page) -> str:
        view = await sessions.get_session(db, me, session_id)
        ids = [lesson.id for lesson in view.lessons]
        lesson_id = field(p, "lesson_id")
        if lesson_id not in ids:
            raise AppError(404, "not_found", "lesson not in this session")
        i = ids.index(lesson_id)
        j = i - 1 if field(p, "direction") == "up" else i + 1
        if 0 <= j < len(ids):
            ids[i], ids[j] = ids[j], ids[i]
            await sessions.reorder_lessons(db, me, session_id, ids)
        return "order changed"

    async def schedule(p: Page) -> str:
        await sessions.update_session(
            db,
            me,
            session_id,
            SessionPatch(
                title=field(p, "title") or msgspec.UNSET,
                scheduled_start_at=_when(p, "start"),
                scheduled_end_at=_when(p, "end"),
                auto_start=bool(p.form.get("auto_start")),
            ),
        )
        return "schedule saved"

    actions: dict[str, Action] = {"add": add, "remove": remove, "move": move, "schedule": schedule}
    return await dispatch(back, p, actions)


@page(STAFF)
async def results_page(request: web.Request, p: Page) -> web.StreamResponse:
    session_id = request.match_info["session_id"]
    db = request.app[DB]
    try:
        view = await sessions.get_session(db, p.me, session_id)
        async with db.read() as s:
            analytics = await results.session_analytics(s, results.scope_of(p.me), session_id)
    except AppError as err:
        raise web.HTTPNotFound(text=err.message) from None
    lessons = await catalog.list_lessons(db, p.me.org_id, limit=500)
    return aiohttp_jinja2.render_template(
        "dashboard/results.html",
        request,
        p.context(
            session=view,
            analytics=analytics,
            charts=charts_of(analytics),
            titles={lesson.id: lesson.title for lesson in lessons.lessons},
        ),
    )


@page(STAFF)
async def devices_page(request: web.Request, p: Page) -> web.StreamResponse:
    listing = await devices.list_devices(request.app[DB], p.me.org_id, status="pending", limit=500)
    return aiohttp_jinja2.render_template(
        "dashboard/devices.html",
        request,
        p.context(devices=listing.devices, **flash(request)),
    )


@page(STAFF)
async def devices_post(request: web.Request, p: Page) -> web.StreamResponse:
    async def approve(p: Page) -> str:
        view = await devices.approve_device(request.app[DB], p.me.org_id, field(p, "device"))
        return f"{view.device_id} approved"

    return await apply("/dashboard/devices", p, approve)


def install(app: web.Application) -> None:
    r = app.router
    r.add_get("/dashboard/", home)
    r.add_post("/dashboard/sessions/new", new_session)
    r.add_get("/dashboard/classes/{class_id}", class_page)
    r.add_get("/dashboard/sessions/{session_id}", session_page)
    r.add_post("/dashboard/sessions/{session_id}", session_post)
    r.add_get("/dashboard/sessions/{session_id}/results", results_page)
    r.add_get("/dashboard/devices", devices_page)
    r.add_post("/dashboard/devices", devices_post)
