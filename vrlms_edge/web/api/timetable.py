"""A class's scheduled sessions as an iCalendar feed (RFC 5545) teachers can subscribe to.

Calendar apps cannot send an Authorization header, so this route also takes `?token=`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from aiohttp import web

from vrlms_edge.domain import sessions
from vrlms_edge.domain.sessions import SessionView
from vrlms_edge.keys import BOX, CLOCK, DB
from vrlms_edge.web.routing import ALL_ROLES, ApiRegistry, principal_of

routes = ApiRegistry()

# RFC 5545 3.1: content lines are folded at 75 octets.
FOLD_OCTETS: Final = 75
# A session with neither an end time nor lesson durations fills one lesson hour.
DEFAULT_DURATION: Final = timedelta(minutes=45)


def escape_text(value: str) -> str:
    """TEXT value escaping (RFC 5545 3.3.11)."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def fold(line: str) -> str:
    """Split a content line into CRLF + space continued chunks of at most 75 octets, never
    inside a UTF-8 sequence."""
    out: list[str] = []
    chunk = ""
    size = 0
    limit = FOLD_OCTETS
    for char in line:
        width = len(char.encode())
        if size + width > limit:
            out.append(chunk)
            chunk, size, limit = "", 0, FOLD_OCTETS - 1  # continuation lines start with a space
        chunk += char
        size += width
    out.append(chunk)
    return "\r\n ".join(out)


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _end_of(view: SessionView) -> datetime:
    assert view.scheduled_start_at is not None
    if view.scheduled_end_at is not None:
        return view.scheduled_end_at
    total_s = sum(lesson.duration_s or 0 for lesson in view.lessons)
    duration = timedelta(seconds=total_s) if total_s > 0 else DEFAULT_DURATION
    return view.scheduled_start_at + duration


def render_calendar(
    *, box_id: str, calendar_name: str, views: list[SessionView], now: datetime
) -> str:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//vrlms-edge//timetable//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text(calendar_name)}",
    ]
    for view in views:
        if view.scheduled_start_at is None:
            continue
        lessons = ", ".join(lesson.title for lesson in view.lessons)
        lines += [
            "BEGIN:VEVENT",
            f"UID:{view.id}@{box_id}",
            f"DTSTAMP:{_stamp(now)}",
            f"DTSTART:{_stamp(view.scheduled_start_at)}",
            f"DTEND:{_stamp(_end_of(view))}",
            f"SUMMARY:{escape_text(view.title or 'VR lesson')}",
            f"DESCRIPTION:{escape_text('Lessons: ' + lessons if lessons else 'No lessons yet')}",
            "STATUS:CONFIRMED",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + "\r\n" for line in lines)


@routes.route(
    "GET",
    "/api/classes/{class_id}/timetable.ics",
    roles=ALL_ROLES,
    summary="The class's scheduled sessions as an iCalendar feed (token also as ?token=)",
    tag="sessions",
    errors=(404,),
    content_type="text/calendar",
    token_in_query=True,
)
async def timetable(request: web.Request) -> web.Response:
    app = request.app
    klass, views = await sessions.class_timetable(
        app[DB], principal_of(request), request.match_info["class_id"]
    )
    body = render_calendar(
        box_id=app[BOX].id, calendar_name=klass.name, views=views, now=app[CLOCK].now()
    )
    return web.Response(
        body=body.encode(),
        content_type="text/calendar",
        charset="utf-8",
        headers={"Content-Disposition": 'inline; filename="timetable.ics"'},
    )
