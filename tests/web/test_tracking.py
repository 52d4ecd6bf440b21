"""GET /api/results/ (scope per role, filters, paging), /api/results.csv (same rows as the
API) and /api/events/export (NDJSON, scoped like results)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from tests.conftest import RunningBox
from tests.domain.test_results import e, fixed_event_set, send
from tests.factories import (
    auth,
    classroom,
    make_class,
    make_session,
    make_user,
    token_for,
)
from tests.live.support import eventually, receive_json
from vrlms_edge.keys import CLOCK, DB, LIVEVIEW
from vrlms_edge.store.models import Role


async def get_json(box: RunningBox, path: str, token: str) -> tuple[int, Any]:
    async with box.http.get(path, headers=auth(token)) as resp:
        return resp.status, await resp.json()


async def test_results_scope_per_role(box: RunningBox) -> None:
    room = await fixed_event_set(box)
    a, b = room.students[0].user.id, room.students[1].user.id
    # A second teacher of the same org with a class of their own.
    other_teacher = await make_user(box.app[DB], room.org, Role.teacher, "other-teacher")
    other_token = await token_for(box.app[DB], box.app[CLOCK], other_teacher)
    other_class = await make_class(box.app[DB], room.org, other_teacher, [])
    await make_session(box.app[DB], room.org, other_class, room.lessons)
    stranger = await classroom(box.app[DB], slug="elsewhere")

    for token in (room.teacher_token, room.admin_token):
        status, body = await get_json(box, "/api/results/", token)
        assert status == 200
        assert {r["user_id"] for r in body["results"]} == {a, b}
        assert body["next_cursor"] is None
    status, body = await get_json(box, "/api/results/", room.students[0].token)
    assert [r["user_id"] for r in body["results"]] == [a]
    status, body = await get_json(box, f"/api/results/?user_id={b}", room.students[0].token)
    assert body["results"] == []
    status, body = await get_json(box, "/api/results/", other_token)
    assert body["results"] == []
    status, body = await get_json(box, "/api/results/", stranger.admin_token)
    assert body["results"] == []
    status, body = await get_json(box, f"/api/results/?session_id={room.session.id}", other_token)
    assert status == 403 and body["error"]["code"] == "not_your_class"
    for param in (f"session_id={room.session.id}", f"class_id={room.klass.id}"):
        status, body = await get_json(box, f"/api/results/?{param}", stranger.teacher_token)
        assert status == 404, param


async def test_results_filters_and_paging(box: RunningBox) -> None:
    room = await fixed_event_set(box)
    a = room.students[0].user.id
    teacher = room.teacher_token
    for query in (
        f"session_id={room.session.id}",
        f"class_id={room.klass.id}",
        f"lesson_id={room.lessons[0].id}",
    ):
        status, body = await get_json(box, f"/api/results/?{query}", teacher)
        assert status == 200 and len(body["results"]) == 2, query
    status, body = await get_json(box, f"/api/results/?user_id={a}", teacher)
    assert [r["status"] for r in body["results"]] == ["completed"]
    status, body = await get_json(box, f"/api/results/?lesson_id={room.lessons[1].id}", teacher)
    assert body["results"] == []
    status, first = await get_json(box, "/api/results/?limit=1", teacher)
    assert len(first["results"]) == 1 and first["next_cursor"]
    status, second = await get_json(
        box, f"/api/results/?limit=1&cursor={first['next_cursor']}", teacher
    )
    assert len(second["results"]) == 1 and second["next_cursor"] is None
    assert first["results"][0]["id"] < second["results"][0]["id"]
    for bad in ("limit=0", "limit=100000", "limit=x"):
        status, body = await get_json(box, f"/api/results/?{bad}", teacher)
        assert status == 422, bad
    row = first["results"][0]
    assert set(row) == {
        "id",
        "user_id",
        "lesson_id",
        "session_id",
        "status",
        "progress",
        "score",
        "time_spent_ms",
        "updated_at",
    }


async def test_csv_matches_the_api(box: RunningBox) -> None:
    room = await fixed_event_set(box)
    for token in (room.teacher_token, room.students[1].token):
        _, api = await get_json(box, "/api/results/", token)
        async with box.http.get("/api/results.csv", headers=auth(token)) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/csv")
            text = await resp.text()
        table = list(csv.DictReader(io.StringIO(text)))
        expected = [
            {k: "" if v is None else str(v) for k, v in row.items()} for row in api["results"]
        ]
        assert table == expected
        assert text.splitlines()[0].split(",") == list(api["results"][0])
    async with box.http.get("/api/results.csv") as resp:
        assert resp.status == 401


async def test_export_streams_ndjson_in_scope(box: RunningBox) -> None:
    room = await fixed_event_set(box)
    await send(box, room, 2, "outside", [e(1, "gaze", -3_600_000, None, target="x")])

    async def export(token: str, query: str = "") -> tuple[int, list[dict[str, Any]]]:
        async with box.http.get(f"/api/events/export{query}", headers=auth(token)) as resp:
            text = await resp.text()
            if resp.status != 200:
                return resp.status, [json.loads(text)]
            assert resp.headers["Content-Type"].startswith("application/x-ndjson")
            return resp.status, [json.loads(line) for line in text.splitlines()]

    _, everything = await export(room.admin_token)
    assert len(everything) == 9 + 6 + 1
    _, session = await export(room.teacher_token, f"?session_id={room.session.id}")
    assert len(session) == 15
    assert {x["session_id"] for x in session} == {room.session.id}
    _, teacher_all = await export(room.teacher_token)
    assert len(teacher_all) == 16  # the event outside a session is their student's
    _, own = await export(room.students[0].token)
    assert len(own) == 9 and {x["user_id"] for x in own} == {room.students[0].user.id}
    assert own[0]["data"] == {}  # lesson_start without data
    assert [x["seq"] for x in own] == list(range(1, 10))
    dev = room.students[1].device
    _, by_device = await export(room.admin_token, f"?device_id={dev.id}")
    assert len(by_device) == 6
    _, same = await export(room.admin_token, f"?device_id={dev.device_id}")
    assert same == by_device
    since = everything[-1]["received_ms"]
    _, recent = await export(room.admin_token, f"?since={since}")
    assert 1 <= len(recent) < len(everything)
    stranger = await classroom(box.app[DB], slug="elsewhere")
    status, _ = await export(stranger.admin_token, f"?session_id={room.session.id}")
    assert status == 404
    _, nothing = await export(stranger.admin_token)
    assert nothing == []


async def test_frame_endpoint_etag_and_who_may_fetch(box: RunningBox) -> None:
    room = await classroom(box.app[DB], students=2)
    hs = room.students[0]
    url = f"/api/devices/{hs.device.id}/frame.jpg"
    outsider = await make_user(box.app[DB], room.org, Role.teacher, "outsider")
    outsider_token = await token_for(box.app[DB], box.app[CLOCK], outsider)
    stranger = await classroom(box.app[DB], slug="elsewhere")

    async with box.http.get(url, headers=auth(room.teacher_token)) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "no_frame"
    async with box.http.ws_connect(f"/websocket/?token={hs.token}") as ws:
        await receive_json(ws)
        await ws.send_bytes(b"\xff\xd8\xff\xe0first")
        live = box.app[LIVEVIEW]
        await eventually(lambda: live.latest_frame(hs.device.id) is not None, 5)
        async with box.http.get(url, headers=auth(room.teacher_token)) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "image/jpeg"
            assert await resp.read() == b"\xff\xd8\xff\xe0first"
            etag = resp.headers["ETag"]
        async with box.http.get(
            url, headers={**auth(room.admin_token), "If-None-Match": etag}
        ) as resp:
            assert resp.status == 304
            assert resp.headers["ETag"] == etag
        await ws.send_bytes(b"\xff\xd8\xff\xe0second")
        await eventually(
            lambda: (live.latest_frame(hs.device.id) or (b"",))[0].endswith(b"second"), 5
        )
        async with box.http.get(
            url, headers={**auth(room.teacher_token), "If-None-Match": etag}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["ETag"] != etag
            assert await resp.read() == b"\xff\xd8\xff\xe0second"
        for token, status in (
            (hs.token, 403),  # students never
            (room.students[1].token, 403),
            (outsider_token, 403),  # a teacher of the org, but not of this student
            (stranger.admin_token, 404),  # another org's device does not exist for you
            (stranger.teacher_token, 404),
        ):
            async with box.http.get(url, headers=auth(token)) as resp:
                assert resp.status == status, token
        async with box.http.get(url) as resp:
            assert resp.status == 401
        async with box.http.get("/api/devices/nope/frame.jpg", headers=auth(room.admin_token)) as r:
            assert r.status == 404
