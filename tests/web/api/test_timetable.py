"""GET /api/classes/{id}/timetable.ics: valid iCalendar (CRLF, escaped text, folded lines)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import RunningBox
from tests.world import bearer, login, make_org
from vrlms_edge.keys import DB
from vrlms_edge.web.api.timetable import escape_text, fold


def test_text_is_escaped_and_long_lines_fold_at_75_octets() -> None:
    assert escape_text("a,b;c\\d\ne") == "a\\,b\\;c\\\\d\\ne"
    line = "SUMMARY:" + "Sonnensystem für Schüler " * 10
    folded = fold(line)
    parts = folded.split("\r\n")
    assert all(len(p.encode()) <= 75 for p in parts)
    assert all(p.startswith(" ") for p in parts[1:])
    assert "".join(p[1:] if i else p for i, p in enumerate(parts)) == line


async def test_timetable_feed(box: RunningBox) -> None:
    world = await make_org(box.app[DB])
    tok = (await login(box.http, "teacher"))["token"]
    start = datetime(2026, 12, 1, 9, 15, tzinfo=UTC)
    async with box.http.post(
        "/api/session/create/",
        json={
            "class_id": world.klass.id,
            "title": "Space, part 1; intro",
            "lesson_ids": [world.lessons[0].id, world.lessons[1].id],
            "scheduled_start_at": start.isoformat(),
        },
        headers=bearer(tok),
    ) as resp:
        session = await resp.json()
    async with box.http.post(
        "/api/session/create/", json={"class_id": world.klass.id}, headers=bearer(tok)
    ) as resp:
        assert resp.status == 201  # unscheduled: not in the feed
    # Calendar apps pass the token in the query.
    path = f"/api/classes/{world.klass.id}/timetable.ics?token={tok}"
    async with box.http.get(path) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/calendar"
        raw = await resp.read()
    text = raw.decode()
    assert text.startswith("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n")
    assert text.endswith("END:VCALENDAR\r\n")
    assert "\n" not in text.replace("\r\n", "")
    unfolded = text.replace("\r\n ", "")
    lines = unfolded.split("\r\n")
    assert lines.count("BEGIN:VEVENT") == 1
    assert "DTSTART:20261201T091500Z" in lines
    # No end given: the lessons' durations (2 x 600 s).
    assert "DTEND:20261201T093500Z" in lines
    assert "SUMMARY:Space\\, part 1\\; intro" in lines
    assert any(line.startswith("UID:" + session["id"]) for line in lines)
    # Students of the class may read it; others' classes and other orgs are 404/403.
    student = (await login(box.http, "student0"))["token"]
    async with box.http.get(path.replace(tok, student)) as resp:
        assert resp.status == 200
    async with box.http.get(f"/api/classes/{world.klass.id}/timetable.ics") as resp:
        assert resp.status == 401
    other = (await login(box.http, "teacher2"))["token"]
    async with box.http.get(
        f"/api/classes/{world.klass.id}/timetable.ics", headers=bearer(other)
    ) as resp:
        assert resp.status == 403
