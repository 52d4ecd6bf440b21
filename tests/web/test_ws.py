"""GET /websocket/: admission (4401/4403/4409), welcome, commands, bad frames."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import RunningBox
from tests.factories import Classroom, make_classroom
from tests.live.support import receive_json
from vrlms_edge.keys import CLOCK, DB


@pytest.fixture
async def room(box: RunningBox) -> Classroom:
    return await make_classroom(box.app[DB], box.app[CLOCK], students=3)


async def test_student_gets_welcome(box: RunningBox, room: Classroom) -> None:
    hs = room.headsets[0]
    async with box.http.ws_connect(f"/websocket/?token={hs.token}") as ws:
        welcome = await receive_json(ws)
    assert welcome["type"] == "welcome"
    assert welcome["role"] == "student"
    assert welcome["device"]["id"] == hs.device.id
    assert welcome["session"] is None


async def test_missing_token_closes_4401(box: RunningBox) -> None:
    async with box.http.ws_connect("/websocket/") as ws:
        msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 4401
