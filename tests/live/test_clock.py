"""The one server clock: a wall-clock step on the box moves no anchor and no position."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import start_box, stop_box
from tests.conftest import test_settings as box_settings
from tests.factories import make_classroom
from tests.live.support import receive_json, receive_type
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.live.clock import ServerClock


class SteppableWall:
    """time.time() stand-in: the box's wall clock, which NTP may step at any moment."""

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


def test_server_clock_ignores_wall_steps() -> None:
    wall = SteppableWall(1_700_000_000.0)
    mono = [100.0]
    clock = ServerClock(wall=wall, monotonic=lambda: mono[0])
    assert clock.now_ms() == 1_700_000_000_000
    wall.now_s += 3600  # NTP steps the wall clock an hour ahead
    mono[0] += 1.5
    assert clock.now_ms() == 1_700_000_001_500


async def test_wall_step_moves_no_lesson(tmp_path: Path) -> None:
    wall = SteppableWall(time.time())
    box = await start_box(box_settings(tmp_path / "data"), clock=ServerClock(wall=wall))
    try:
        room = await make_classroom(box.app[DB], box.app[CLOCK], 1)
        hs = room.headsets[0]
        async with box.http.ws_connect(f"/websocket/?token={room.teacher_token}") as teacher:
            await receive_json(teacher)
            await teacher.send_json(
                {"type": "command", "id": 1, "session_id": room.session.id, "action": "play"}
            )
            before = (await receive_type(teacher, "result"))["state"]
            wall.now_s -= 7200  # the box's wall clock jumps two hours back
            async with box.http.ws_connect(f"/websocket/?token={hs.token}") as student:
                welcome = await receive_json(student)
                await student.send_json({"type": "time", "id": 1, "t0": 0})
                reply = await receive_type(student, "time")
        assert welcome["session"]["anchor_server_ms"] == before["anchor_server_ms"]
        assert welcome["session"]["anchor_position_ms"] == before["anchor_position_ms"]
        # Server time kept running from where it was: the position now is seconds, not hours.
        position_now = reply["t1"] - before["anchor_server_ms"]
        assert -1000 < position_now < 5000
        assert abs(welcome["server_ms"] - reply["t1"]) < 5000
    finally:
        await stop_box(box)
