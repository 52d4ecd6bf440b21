"""GET /websocket/: admission (4401/4403/4409), welcome, commands, acks, bad frames, and
GET /api/sessions/{id}/live and /api/asyncapi.json."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import select

from tests.conftest import RunningBox, start_box, stop_box
from tests.conftest import test_settings as box_settings
from tests.factories import (
    Classroom,
    add_headset_device,
    fresh_slug,
    make_classroom,
    make_user,
    token_for,
)
from tests.live.support import eventually, receive_json, receive_type
from vrlms_edge.domain import roster
from vrlms_edge.keys import CLOCK, DB, HUB
from vrlms_edge.live import protocol
from vrlms_edge.store.models import Attendance, AuthToken, Device, DeviceStatus, Role

# One box for the whole module (starting one takes ~2 s); every test makes its own org.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def box(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningBox]:
    running = await start_box(box_settings(tmp_path_factory.mktemp("ws") / "data"))
    try:
        yield running
    finally:
        await stop_box(running)


@pytest_asyncio.fixture(loop_scope="module")
async def room(box: RunningBox) -> Classroom:
    return await make_classroom(box.app[DB], box.app[CLOCK], students=3, slug=fresh_slug())


async def close_code(box: RunningBox, path: str, **kwargs: Any) -> int | None:
    async with box.http.ws_connect(path, **kwargs) as ws:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE, (msg.type, msg.data)
        return int(msg.data)


async def test_student_gets_welcome_with_device(box: RunningBox, room: Classroom) -> None:
    hs = room.headsets[0]
    async with box.http.ws_connect(f"/websocket/?token={hs.token}") as ws:
        welcome = await receive_json(ws)
    assert welcome["type"] == "welcome"
    assert welcome["protocol"] == 1
    assert welcome["role"] == "student"
    assert welcome["user"]["nickname"] == hs.user.nickname
    assert welcome["device"] == {
        "id": hs.device.id,
        "device_id": hs.device.device_id,
        "name": hs.device.name,
        "status": "approved",
    }
    assert welcome["session"] is None
    assert welcome["heartbeat_s"] == 5.0
    assert abs(welcome["server_ms"] - box.app[CLOCK].now_ms()) < 5000


async def test_token_in_authorization_header(box: RunningBox, room: Classroom) -> None:
    headers = {"Authorization": f"Bearer {room.headsets[1].token}"}
    async with box.http.ws_connect("/websocket/", headers=headers) as ws:
        assert (await receive_json(ws))["type"] == "welcome"


async def test_missing_or_bad_token_closes_4401(box: RunningBox) -> None:
    assert await close_code(box, "/websocket/") == protocol.CLOSE_UNAUTHORIZED
    assert await close_code(box, "/websocket/?token=nope") == protocol.CLOSE_UNAUTHORIZED
    bad = {"Authorization": "Bearer " + "x" * 43}
    assert await close_code(box, "/websocket/", headers=bad) == protocol.CLOSE_UNAUTHORIZED


async def test_disabled_user_or_expired_token_closes_4401(box: RunningBox, room: Classroom) -> None:
    db, clock = box.app[DB], box.app[CLOCK]
    user = await make_user(db, room.org, Role.student, "leaver")
    device = await add_headset_device(db, room.org, f"{room.org.slug}-LEAVER")
    token = await token_for(db, clock, user, device)
    async with box.http.ws_connect(f"/websocket/?token={token}") as ws:
        assert (await receive_json(ws))["type"] == "welcome"
    await roster.disable_user(db, room.org.id, user.id)
    assert await close_code(box, f"/websocket/?token={token}") == protocol.CLOSE_UNAUTHORIZED
    async with db.write() as s:
        stale = await s.scalar(select(AuthToken).where(AuthToken.user_id == room.teacher.id))
        assert stale is not None
        stale.expires_at = clock.now() - timedelta(seconds=1)
    path = f"/websocket/?token={room.teacher_token}"
    assert await close_code(box, path) == protocol.CLOSE_UNAUTHORIZED


async def test_pending_device_closes_4403(box: RunningBox, room: Classroom) -> None:
    db, clock = box.app[DB], box.app[CLOCK]
    user = await make_user(db, room.org, Role.student, "newkid")
    device = await add_headset_device(
        db, room.org, f"{room.org.slug}-NEW", status=DeviceStatus.pending
    )
    token = await token_for(db, clock, user, device)
    assert await close_code(box, f"/websocket/?token={token}") == protocol.CLOSE_FORBIDDEN


async def test_device_bound_to_someone_else_closes_4403(box: RunningBox, room: Classroom) -> None:
    db, clock = box.app[DB], box.app[CLOCK]
    other = await make_user(db, room.org, Role.student, "intruder")
    token = await token_for(db, clock, other, room.headsets[0].device)
    assert await close_code(box, f"/websocket/?token={token}") == protocol.CLOSE_FORBIDDEN


async def test_foreign_browser_origin_closes_4403(box: RunningBox, room: Classroom) -> None:
    path = f"/websocket/?token={room.teacher_token}"
    evil = {"Origin": "http://evil.example"}
    assert await close_code(box, path, headers=evil) == protocol.CLOSE_FORBIDDEN
    own = {"Origin": box.url}
    async with box.http.ws_connect(path, headers=own) as ws:
        assert (await receive_json(ws))["type"] == "welcome"


async def test_second_connection_of_device_replaces_first_4409(
    box: RunningBox, room: Classroom
) -> None:
    path = f"/websocket/?token={room.headsets[0].token}"
    async with box.http.ws_connect(path) as old:
        await receive_json(old)
        async with box.http.ws_connect(path) as new:
            assert (await receive_json(new))["type"] == "welcome"
            msg = await old.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == protocol.CLOSE_REPLACED
            # The new one is alive and answers.
            await new.send_json({"type": "time", "id": 1, "t0": 5})
            assert (await receive_type(new, "time"))["id"] == 1


async def test_time_reply_carries_server_times(box: RunningBox, room: Classroom) -> None:
    async with box.http.ws_connect(f"/websocket/?token={room.headsets[0].token}") as ws:
        await receive_json(ws)
        before = box.app[CLOCK].now_ms()
        await ws.send_json({"type": "time", "id": "a", "t0": 12.5})
        reply = await receive_type(ws, "time")
        after = box.app[CLOCK].now_ms()
    assert reply["id"] == "a" and reply["t0"] == 12.5
    assert before - 1 <= reply["t1"] <= reply["t2"] <= after + 1


async def test_time_flood_rate_limited_then_closed_1008(box: RunningBox, room: Classroom) -> None:
    async with box.http.ws_connect(f"/websocket/?token={room.headsets[0].token}") as ws:
        await receive_json(ws)
        for i in range(32):
            await ws.send_json({"type": "time", "id": i, "t0": 0})
        answered = [await receive_type(ws, "time") for _ in range(32)]
        assert [r["id"] for r in answered] == list(range(32))
        await ws.send_json({"type": "time", "id": 99, "t0": 0})
        refused = await receive_type(ws, "error")
        assert refused == {
            "type": "error",
            "id": 99,
            "error": {"code": "rate_limited", "message": "too many time requests"},
        }
        for i in range(200):
            await ws.send_json({"type": "time", "id": i, "t0": 0})
        async with asyncio.timeout(5):
            while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == protocol.CLOSE_POLICY
    # Time requests spread out are all answered (10/s is the promise).
    async with box.http.ws_connect(f"/websocket/?token={room.headsets[1].token}") as ws:
        await receive_json(ws)
        for i in range(45):
            await ws.send_json({"type": "time", "id": i, "t0": 0})
            await asyncio.sleep(0.011 if i < 32 else 0.1)
            assert (await receive_type(ws, "time"))["id"] == i


JUNK: list[tuple[str, str]] = [
    ("not json", "invalid_json"),
    ('{"type": "launch_missiles"}', "unknown_type"),
    ('{"no_type": 1}', "unknown_type"),
    ('{"type": "time", "id": 4, "t0": "yesterday"}', "invalid_message"),
    ('{"type": "ack", "rev": "twelve"}', "invalid_message"),
    ('{"type": "command", "id": 5, "session_id": 3, "action": "play"}', "invalid_message"),
    ("[1, 2, 3]", "invalid_message"),
    ('{"type": "event", "stream": "s", "seq": 0, "kind": "gaze", "t_ms": 1}', "invalid_message"),
    ('{"type": "ack", "rev": 3}', "no_session"),
]


async def test_junk_frames_get_error_and_connection_stays(box: RunningBox, room: Classroom) -> None:
    async with box.http.ws_connect(f"/websocket/?token={room.headsets[0].token}") as ws:
        await receive_json(ws)
        for frame, code in JUNK:
            await ws.send_str(frame)
            err = await receive_type(ws, "error")
            assert err["error"]["code"] == code, frame
            assert err["id"] == (4 if '"id": 4' in frame else 5 if '"id": 5' in frame else None)
            await ws.send_json({"type": "time", "id": 1, "t0": 0})
            assert (await receive_type(ws, "time"))["id"] == 1


async def test_binary_frames_only_from_headsets(box: RunningBox, room: Classroom) -> None:
    async with box.http.ws_connect(f"/websocket/?token={room.teacher_token}") as ws:
        await receive_json(ws)
        await ws.send_bytes(b"\xff\xd8\xff\xe0jpeg")
        assert (await receive_type(ws, "error"))["error"]["code"] == "binary_not_allowed"
    hs = room.headsets[0]
    async with box.http.ws_connect(f"/websocket/?token={hs.token}") as ws:
        await receive_json(ws)
        await ws.send_bytes(b"GIF89a")
        assert (await receive_type(ws, "error"))["error"]["code"] == "invalid_frame"
        await ws.send_bytes(b"\xff\xd8\xff\xe0view")
        await eventually(lambda: box.app[HUB].frame_of(hs.device.id) is not None, 5)
        frame = box.app[HUB].frame_of(hs.device.id)
        assert frame is not None and frame[1] == b"\xff\xd8\xff\xe0view"


async def test_oversized_text_closes_1009(box: RunningBox, room: Classroom) -> None:
    async with box.http.ws_connect(f"/websocket/?token={room.headsets[0].token}") as ws:
        await receive_json(ws)
        await ws.send_str('{"type":"status","view":{"x":"' + "a" * 70_000 + '"}}')
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == protocol.CLOSE_TOO_BIG
    async with box.http.ws_connect(f"/websocket/?token={room.headsets[0].token}") as ws:
        await receive_json(ws)
        await ws.send_bytes(b"\xff\xd8\xff" + b"\0" * (600 * 1024))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == protocol.CLOSE_TOO_BIG
    # The box is still up for everyone.
    async with box.http.get("/api/health") as resp:
        assert resp.status == 200


async def test_teacher_command_result_and_broadcast(box: RunningBox, room: Classroom) -> None:
    hs = room.headsets[0]
    async with (
        box.http.ws_connect(f"/websocket/?token={room.teacher_token}") as teacher,
        box.http.ws_connect(f"/websocket/?token={hs.token}") as student,
    ):
        welcome = await receive_json(teacher)
        assert welcome["role"] == "teacher"
        # Teachers get the state of every session of their classes.
        idle = await receive_type(teacher, "state")
        assert idle["session_id"] == room.session.id and idle["status"] == "idle"
        await receive_json(student)
        await teacher.send_json(
            {"type": "command", "id": 7, "session_id": room.session.id, "action": "play"}
        )
        result = await receive_type(teacher, "result")
        assert result["id"] == 7 and result["ok"] is True
        state = result["state"]
        assert state["status"] == "playing" and state["rev"] == 1
        assert state["lesson"]["id"] == room.lessons[0].id
        lead = state["anchor_server_ms"] - box.app[CLOCK].now_ms()
        assert 0 < lead <= 250
        pushed = await receive_type(student, "state")
        assert pushed == {"type": "state", **{k: v for k, v in state.items() if k != "type"}}
        await teacher.send_json(
            {"type": "command", "id": 8, "session_id": room.session.id, "action": "play"}
        )
        refused = await receive_type(teacher, "result")
        assert refused == {
            "type": "result",
            "id": 8,
            "ok": False,
            "error": {
                "code": "invalid_transition",
                "message": "cannot play a session that is playing",
            },
        }
        await teacher.send_json(
            {"type": "command", "id": 9, "session_id": "nope", "action": "pause"}
        )
        assert (await receive_type(teacher, "result"))["error"]["code"] == "not_found"
        await student.send_json(
            {"type": "command", "id": 1, "session_id": room.session.id, "action": "stop"}
        )
        assert (await receive_type(student, "result"))["error"]["code"] == "forbidden"


async def test_acks_reach_live_picture_and_endpoint(box: RunningBox, room: Classroom) -> None:
    hs = room.headsets[0]
    async with (
        box.http.ws_connect(f"/websocket/?token={room.teacher_token}") as teacher,
        box.http.ws_connect(f"/websocket/?token={hs.token}") as student,
    ):
        await receive_json(teacher)
        await receive_json(student)
        await teacher.send_json(
            {"type": "command", "id": 1, "session_id": room.session.id, "action": "play"}
        )
        state = (await receive_type(teacher, "result"))["state"]
        await receive_type(student, "state")
        await student.send_json(
            {"type": "ack", "rev": state["rev"], "applied_ms": state["anchor_server_ms"] + 3}
        )
        await student.send_json({"type": "status", "battery": 0.5, "playing": True})
        # Reading lets the client library answer the box's ping (RTT) before the reply.
        await student.send_json({"type": "time", "id": 1, "t0": 0})
        await receive_type(student, "time")
        async with asyncio.timeout(5):
            while True:
                picture = await receive_type(teacher, "class")
                me = next(s for s in picture["students"] if s["user_id"] == hs.user.id)
                if me["applied_rev"] == state["rev"] and me["status"]:
                    break
        assert me["online"] is True and me["skew_ms"] == 3
        assert me["status"]["battery"] == 0.5
        assert picture["session_id"] == room.session.id
        assert len(picture["students"]) == 3
        headers = {"Authorization": f"Bearer {room.teacher_token}"}
        async with box.http.get(f"/api/sessions/{room.session.id}/live", headers=headers) as r:
            assert r.status == 200
            live = await r.json()
        assert live["rev"] == state["rev"]
        assert live["lead_ms"] >= 250
        row = next(s for s in live["students"] if s["user_id"] == hs.user.id)
        assert row["applied_rev"] == state["rev"] and row["skew_ms"] == 3
        assert row["rtt_ms"] is not None and row["last_seen_ms"] > 0
        other = next(s for s in live["students"] if s["user_id"] == room.headsets[1].user.id)
        assert other["online"] is False
    # Students may not read it; other orgs' ids are 404.
    headers = {"Authorization": f"Bearer {hs.token}"}
    async with box.http.get(f"/api/sessions/{room.session.id}/live", headers=headers) as r:
        assert r.status == 403
    headers = {"Authorization": f"Bearer {room.teacher_token}"}
    async with box.http.get("/api/sessions/nope/live", headers=headers) as r:
        assert r.status == 404


async def test_attendance_rows_record_join_and_leave(box: RunningBox, room: Classroom) -> None:
    hs = room.headsets[0]
    async with box.http.ws_connect(f"/websocket/?token={room.teacher_token}") as teacher:
        await receive_json(teacher)
        await teacher.send_json(
            {"type": "command", "id": 1, "session_id": room.session.id, "action": "play"}
        )
        await receive_type(teacher, "result")
        async with box.http.ws_connect(f"/websocket/?token={hs.token}") as student:
            welcome = await receive_json(student)
            assert welcome["session"]["status"] == "playing"
            assert welcome["session"]["session_id"] == room.session.id
        hub = box.app[HUB]
        await eventually(lambda: len(hub.connections) == 1, 5)  # the student has left
        assert hub.attendance is not None
        await hub.attendance.flushed()
    async with box.app[DB].read() as s:
        rows = list(
            (await s.execute(select(Attendance).where(Attendance.org_id == room.org.id))).scalars()
        )
        device = await s.get(Device, hs.device.id)
    assert [(r.user_id, r.session_id, r.device_id) for r in rows] == [
        (hs.user.id, room.session.id, hs.device.id)
    ]
    assert rows[0].left_at is not None and rows[0].left_at >= rows[0].joined_at
    assert device is not None and device.last_seen_at is not None


async def test_asyncapi_document_lists_every_message(box: RunningBox) -> None:
    async with box.http.get("/api/asyncapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["live"]["address"] == "/websocket/"
    names = set(doc["components"]["messages"])
    for kind in ("time", "ack", "command", "event", "status"):
        assert f"client_{kind}" in names
    for kind in ("welcome", "state", "time", "result", "error", "event_ack", "class"):
        assert f"server_{kind}" in names
    state = doc["components"]["schemas"]["SessionState"]
    assert set(state["required"]) >= {"session_id", "rev", "status", "anchor_server_ms"}
    assert "4409" in doc["info"]["description"]
