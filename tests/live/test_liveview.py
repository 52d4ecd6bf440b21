"""The teacher's live view: class pictures bounded per teacher whatever 30 headsets send, the
final picture, and view frames (JPEG check, size and rate limits, newest kept)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.conftest import RunningBox
from tests.factories import TrackingRoom, auth, classroom
from tests.live.support import eventually, receive_json, receive_type
from vrlms_edge.keys import DB, LIVEVIEW
from vrlms_edge.live.liveview import FRAME_BURST, MAX_FRAME_BYTES

HEADSETS = 30
STATUS_HZ = 20
SEND_FOR_S = 2.0


def jpeg(tag: str, size: int = 0) -> bytes:
    body = tag.encode()
    return b"\xff\xd8\xff\xe0" + body + b"\0" * max(0, size - 4 - len(body))


async def _send_status(
    ws: aiohttp.ClientWebSocketResponse, index: int, last: dict[int, dict[str, Any]]
) -> None:
    period = 1.0 / STATUS_HZ
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < SEND_FOR_S:
        n += 1
        status = {
            "type": "status",
            "battery": round(1.0 - n / 1000 - index / 10_000, 6),
            "app": "com.example.lesson1",
            "playing": True,
            "position_ms": n * 50,
            "view": {"target": f"obj-{index}-{n % 7}"},
        }
        await ws.send_json(status)
        last[index] = status
        await asyncio.sleep(period)


async def test_teacher_gets_at_most_10_pictures_per_second(box: RunningBox) -> None:
    room = await classroom(box.app[DB], students=HEADSETS)
    last: dict[int, dict[str, Any]] = {}
    pictures: list[tuple[float, dict[str, Any]]] = []
    async with box.http.ws_connect(f"/websocket/?token={room.teacher_token}") as teacher:
        await receive_json(teacher)
        headsets = [
            await box.http.ws_connect(f"/websocket/?token={hs.token}") for hs in room.students
        ]
        try:
            for ws in headsets:
                await receive_json(ws)

            async def watch() -> None:
                async for msg in teacher:
                    body = msg.json()
                    if body["type"] == "class":
                        pictures.append((time.monotonic(), body))

            watcher = asyncio.create_task(watch())
            started = time.monotonic()
            await asyncio.gather(*(_send_status(ws, i, last) for i, ws in enumerate(headsets)))
            sending = time.monotonic() - started
            await asyncio.sleep(1.2)  # the last changes reach the teacher's picture
            watcher.cancel()
        finally:
            for ws in headsets:
                await ws.close()
    assert len(last) == HEADSETS
    during = [t for t, _ in pictures if started <= t <= started + sending]
    assert during, "no class picture while headsets were sending"
    # Any one-second window holds at most 10 pictures.
    times = [t for t, _ in pictures]
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 1.0) <= 10
    final = pictures[-1][1]
    assert final["class_id"] == room.klass.id
    students = {s["user_id"]: s for s in final["students"]}
    for i, hs in enumerate(room.students):
        pic = students[hs.user.id]
        sent = last[i]
        assert pic["online"] is True and pic["device"] == hs.device.id
        status = pic["status"]
        assert (status["battery"], status["position_ms"]) == (sent["battery"], sent["position_ms"])
        assert status["app"] == "com.example.lesson1"
        assert pic["target"] == sent["view"]["target"]


async def test_picture_carries_progress_target_and_frame_revision(box: RunningBox) -> None:
    room = await classroom(box.app[DB], students=2)
    hs = room.students[0]
    lesson = room.lessons[0].id
    async with (
        box.http.ws_connect(f"/websocket/?token={room.teacher_token}") as teacher,
        box.http.ws_connect(f"/websocket/?token={hs.token}") as ws,
    ):
        await receive_json(teacher)
        await receive_json(ws)
        now = int(time.time() * 1000)
        for seq, (kind, data) in enumerate(
            [("progress", {"progress": 0.4}), ("gaze", {"yaw": 100, "pitch": 5})], start=1
        ):
            await ws.send_json(
                {
                    "type": "event",
                    "stream": "p",
                    "seq": seq,
                    "kind": kind,
                    "t_ms": now,
                    "lesson_id": lesson,
                    "data": data,
                }
            )
        await ws.send_bytes(jpeg("one"))
        await ws.send_bytes(jpeg("two"))
        async with asyncio.timeout(5):
            while True:
                picture = await receive_type(teacher, "class")
                me = next(s for s in picture["students"] if s["user_id"] == hs.user.id)
                if me["progress"] is not None and me["frame_rev"] == 2 and me["target"]:
                    break
        assert (me["lesson_id"], me["progress"]) == (lesson, 0.4)
        assert me["target"] == "yaw:90/pitch:0"
        other = next(s for s in picture["students"] if s["user_id"] != hs.user.id)
        assert (other["online"], other["progress"], other["frame_rev"]) == (False, None, 0)


async def test_frames_are_checked_limited_and_latest_wins(box: RunningBox) -> None:
    room: TrackingRoom = await classroom(box.app[DB], students=1)
    hs = room.students[0]
    live = box.app[LIVEVIEW]
    async with box.http.ws_connect(f"/websocket/?token={hs.token}") as ws:
        await receive_json(ws)
        await ws.send_bytes(jpeg("big", MAX_FRAME_BYTES + 1))
        assert (await receive_type(ws, "error"))["error"]["code"] == "frame_too_large"
        await ws.send_bytes(b"\x89PNG\r\n")
        assert (await receive_type(ws, "error"))["error"]["code"] == "invalid_frame"
        assert live.latest_frame(hs.device.id) is None
        # A burst beyond the rate: the extra frames are refused, the box keeps the newest one
        # it accepted, and the connection stays open.
        for n in range(int(FRAME_BURST) + 3):
            await ws.send_bytes(jpeg(f"f{n}", 1000))
        assert (await receive_type(ws, "error"))["error"]["code"] == "rate_limited"
        await eventually(lambda: live.latest_frame(hs.device.id) is not None, 5)
        kept = live.latest_frame(hs.device.id)
        assert kept is not None and kept[0].startswith(b"\xff\xd8\xff\xe0f")
        number = int(kept[0][5:].split(b"\0")[0])
        assert number < FRAME_BURST + 1
        await asyncio.sleep(0.3)  # one token back
        await ws.send_bytes(jpeg("later"))
        await eventually(lambda: (live.latest_frame(hs.device.id) or (b"",))[0] == jpeg("later"), 5)
        await ws.send_json({"type": "time", "id": 1, "t0": 0})
        assert (await receive_type(ws, "time"))["id"] == 1
    # The frame endpoint serves what the live view kept.
    async with box.http.get(
        f"/api/devices/{hs.device.id}/frame.jpg", headers=auth(room.teacher_token)
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == jpeg("later")
