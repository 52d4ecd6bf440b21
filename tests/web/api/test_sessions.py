"""Session endpoints over HTTP: the seed flow, plan editing, schedule, lists and scope."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.conftest import RunningBox
from tests.world import bearer, login, make_org
from vrlms_edge.keys import CLOCK, DB


async def post(box: RunningBox, path: str, body: dict[str, Any], tok: str) -> tuple[int, Any]:
    async with box.http.post(path, json=body, headers=bearer(tok)) as resp:
        return resp.status, await resp.json()


async def get(box: RunningBox, path: str, tok: str) -> tuple[int, Any]:
    async with box.http.get(path, headers=bearer(tok)) as resp:
        return resp.status, await resp.json()


async def test_seed_flow_create_add_start_pause_stop(box: RunningBox) -> None:
    world = await make_org(box.app[DB])
    tok = (await login(box.http, "teacher"))["token"]
    status, classes = await get(box, "/api/classes/", tok)
    assert status == 200 and [c["id"] for c in classes["classes"]] == [world.klass.id]
    assert {s["nickname"] for s in classes["classes"][0]["students"]} == {
        "student0",
        "student1",
        "student2",
    }
    status, session = await post(
        box, "/api/session/create/", {"class_id": world.klass.id, "title": "Space day"}, tok
    )
    assert status == 201
    assert set(session) == {
        "id",
        "class_id",
        "title",
        "scheduled_start_at",
        "scheduled_end_at",
        "auto_start",
        "lessons",
        "state",
    }
    assert session["state"]["status"] == "idle" and session["state"]["type"] == "state"
    sid = session["id"]
    status, body = await post(box, "/api/session/start/", {"session_id": sid}, tok)
    assert (status, body["error"]["code"]) == (409, "no_lesson")
    for lesson in world.lessons:
        status, session = await post(
            box, "/api/session/addLesson/", {"session_id": sid, "lesson_id": lesson.id}, tok
        )
        assert status == 200
    # Adding again changes nothing.
    status, again = await post(
        box, "/api/session/addLesson/", {"session_id": sid, "lesson_id": world.lessons[0].id}, tok
    )
    assert [lesson["id"] for lesson in again["lessons"]] == [lesson.id for lesson in world.lessons]
    assert again["lessons"][0]["apk_package"] == "com.example.solarsystem"
    now_ms = box.app[CLOCK].now_ms()
    status, started = await post(
        box, "/api/session/start/", {"session_id": sid, "lead_ms": 500}, tok
    )
    assert status == 200 and started["state"]["status"] == "playing"
    assert started["state"]["anchor_server_ms"] >= now_ms + 500
    assert started["state"]["lesson"]["id"] == world.lessons[0].id
    status, paused = await post(box, "/api/session/pause/", {"session_id": sid}, tok)
    assert paused["state"]["status"] == "paused"
    status, seeked = await post(
        box, "/api/session/seek/", {"session_id": sid, "position_ms": 42_000}, tok
    )
    assert seeked["state"]["anchor_position_ms"] == 42_000
    status, eyes = await post(
        box, "/api/session/attention/", {"session_id": sid, "on": True, "message": "Hi"}, tok
    )
    assert eyes["state"]["attention"] == {"on": True, "message": "Hi"}
    status, launched = await post(
        box, "/api/session/launch/", {"session_id": sid, "lesson_id": world.lessons[1].id}, tok
    )
    assert launched["state"]["lesson"]["id"] == world.lessons[1].id
    status, stopped = await post(box, "/api/session/stop/", {"session_id": sid}, tok)
    assert stopped["state"]["status"] == "stopped" and stopped["state"]["rev"] == 6
    status, body = await post(box, "/api/session/pause/", {"session_id": sid}, tok)
    assert (status, body["error"]["code"]) == (409, "invalid_transition")
    # Reorder and remove.
    order = [world.lessons[2].id, world.lessons[0].id, world.lessons[1].id]
    status, reordered = await post(
        box, "/api/session/reorder/", {"session_id": sid, "lesson_ids": order}, tok
    )
    assert [lesson["id"] for lesson in reordered["lessons"]] == order
    status, removed = await post(
        box, "/api/session/removeLesson/", {"session_id": sid, "lesson_id": order[0]}, tok
    )
    assert [lesson["id"] for lesson in removed["lessons"]] == order[1:]
    # A student can read it but not drive it.
    student = (await login(box.http, "student0"))["token"]
    status, seen = await get(box, f"/api/sessions/{sid}/", student)
    assert status == 200 and seen["state"]["rev"] == 6
    status, body = await post(box, "/api/session/start/", {"session_id": sid}, student)
    assert (status, body["error"]["code"]) == (403, "forbidden")


async def test_schedule_timetable_upcoming_and_pages(box: RunningBox) -> None:
    world = await make_org(box.app[DB])
    tok = (await login(box.http, "teacher"))["token"]
    now = box.app[CLOCK].now()
    ids = []
    for hours in (5, -3, 1, 2, 30):
        start = now + timedelta(hours=hours)
        status, created = await post(
            box,
            "/api/session/create/",
            {
                "class_id": world.klass.id,
                "title": f"in {hours}h",
                "lesson_ids": [world.lessons[0].id],
                "scheduled_start_at": start.isoformat(),
                "scheduled_end_at": (start + timedelta(minutes=45)).isoformat(),
            },
            tok,
        )
        assert status == 201, created
        ids.append(created["id"])
    # The class timetable in a window, by start time, a page at a time.
    window = (
        f"from={(now - timedelta(hours=4)).isoformat()}&to={(now + timedelta(hours=6)).isoformat()}"
    )
    window = window.replace("+", "%2B")
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        status, page = await get(
            box, f"/api/sessions/?class_id={world.klass.id}&{window}&limit=2{cursor}", tok
        )
        assert status == 200, page
        seen += [s["title"] for s in page["sessions"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == ["in -3h", "in 1h", "in 2h", "in 5h"]
    # A student's "next": not over yet, soonest first.
    student = (await login(box.http, "student0"))["token"]
    status, upcoming = await get(box, "/api/sessions/?upcoming=1&limit=2", student)
    assert [s["title"] for s in upcoming["sessions"]] == ["in 1h", "in 2h"]
    # Move a session; end before start is refused with the field path.
    async with box.http.patch(
        f"/api/sessions/{ids[4]}/",
        json={"scheduled_start_at": (now + timedelta(hours=40)).isoformat()},
        headers=bearer(tok),
    ) as resp:
        body = await resp.json()
        assert resp.status == 422 and body["error"]["detail"]["path"] == "$.scheduled_end_at"
    status, moved = await post(
        box,
        "/api/session/update/",
        {
            "session_id": ids[4],
            "scheduled_start_at": (now + timedelta(minutes=30)).isoformat(),
            "scheduled_end_at": (now + timedelta(minutes=75)).isoformat(),
            "title": "Moved",
        },
        tok,
    )
    assert status == 200 and moved["title"] == "Moved"
    status, upcoming = await get(box, "/api/sessions/?upcoming=1&limit=1", student)
    assert [s["title"] for s in upcoming["sessions"]] == ["Moved"]
    # Teachers see only their classes; a class of another teacher is 403.
    other = (await login(box.http, "teacher2"))["token"]
    status, none = await get(box, "/api/sessions/", other)
    assert none["sessions"] == []
    status, body = await get(box, f"/api/sessions/?class_id={world.klass.id}", other)
    assert (status, body["error"]["code"]) == (403, "not_your_class")
    # auto_start needs a start time.
    status, body = await post(
        box, "/api/session/create/", {"class_id": world.klass.id, "auto_start": True}, tok
    )
    assert status == 422 and body["error"]["detail"]["path"] == "$.auto_start"
