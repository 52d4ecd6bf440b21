"""The hub: lead from measured round trips, silent peers dropped and marked offline,
one broadcast path for REST-style domain calls and WS commands."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RunningBox, start_box, stop_box
from tests.conftest import test_settings as box_settings
from tests.factories import make_classroom
from tests.live.support import DelayProxy, eventually, raw_websocket, receive_json, receive_type
from vrlms_edge.domain.principal import Principal
from vrlms_edge.domain.sessions import Action, Change, SessionState, change_state, state_of
from vrlms_edge.keys import BROADCAST, CLOCK, DB, HUB, SETTINGS
from vrlms_edge.live import hub as hub_module
from vrlms_edge.live.hub import percentile
from vrlms_edge.store.models import Role, Session


@pytest.fixture
async def quick_box(tmp_path: Path) -> AsyncIterator[RunningBox]:
    running = await start_box(box_settings(tmp_path / "data", heartbeat_s=0.3))
    try:
        yield running
    finally:
        await stop_box(running)


async def keep_reading(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:  # the client library answers pings while reading
        pass


def test_percentile() -> None:
    assert percentile([5, 1, 3, 2, 4], 0.95) == 5
    assert percentile([1.0] * 19 + [100.0], 0.95) == 1.0
    assert percentile(range(1, 101), 0.95) == 95


async def test_silent_peer_is_dropped_and_marked_offline(quick_box: RunningBox) -> None:
    box = quick_box
    room = await make_classroom(box.app[DB], box.app[CLOCK], 2)
    silent, alive = room.headsets
    _, writer = await raw_websocket(box.url, f"/websocket/?token={silent.token}")
    ws = await box.http.ws_connect(f"/websocket/?token={alive.token}")
    reading = asyncio.create_task(keep_reading(ws))
    hub = box.app[HUB]
    try:
        await eventually(lambda: len(hub.connections) == 2, 2)
        # Two heartbeat intervals (0.6 s) plus the watchdog period.
        await eventually(lambda: hub.closed_silent == 1, 3)
        await asyncio.sleep(1.0)  # the reading peer answers pings and stays
        assert [c.principal.user_id for c in hub.connections] == [alive.user.id]
        assert hub.closed_silent == 1
        picture = hub.picture(room.klass.id)
        assert picture is not None
        online = {s.user_id: s.online for s in picture.students}
        assert online == {silent.user.id: False, alive.user.id: True}
    finally:
        writer.close()
        reading.cancel()
        await ws.close()


async def test_lead_follows_measured_round_trips(box: RunningBox) -> None:
    room = await make_classroom(box.app[DB], box.app[CLOCK], 2)
    hub = box.app[HUB]
    floor = box.app[SETTINGS].start_lead_floor_ms
    async with TeacherWs(box, room.teacher_token) as teacher:
        # Loopback: round trips of a millisecond keep the lead at its floor.
        assert hub.current_lead_ms(room.session.id) == floor
        proxy = await DelayProxy(box.url, 0.15, 0.2).start()
        try:
            ws = await box.http.ws_connect(proxy.ws_url + f"?token={room.headsets[0].token}")
            reading = asyncio.create_task(keep_reading(ws))
            conn_rtt = lambda: [  # noqa: E731
                c.rtt_ms for c in hub.connections if c.principal.role == Role.student
            ]
            await eventually(lambda: conn_rtt() != [] and conn_rtt()[0] is not None, 5)
            lead = hub.current_lead_ms(room.session.id)
            # 3 x p95 of the room's round trips (300..400 ms through the proxy).
            assert 900 <= lead <= 1300, lead
            await teacher.send_json(
                {"type": "command", "id": 1, "session_id": room.session.id, "action": "play"}
            )
            state = (await receive_type(teacher, "result"))["state"]
            assert state["anchor_server_ms"] - box.app[CLOCK].now_ms() > 800
            reading.cancel()
            await ws.close()
        finally:
            await proxy.close()
    assert box.app[BROADCAST] is hub


async def test_domain_change_and_ws_command_share_one_broadcast(box: RunningBox) -> None:
    room = await make_classroom(box.app[DB], box.app[CLOCK], 1)
    hs = room.headsets[0]
    async with box.http.ws_connect(f"/websocket/?token={hs.token}") as student:
        await receive_json(student)
        teacher = Principal(
            user_id=room.teacher.id,
            org_id=room.org.id,
            role=Role.teacher,
            nickname=room.teacher.nickname,
            display_name=room.teacher.display_name,
            token_id="t",
        )
        # What a REST endpoint does: the same domain call with app[BROADCAST].
        app = box.app
        state = await change_state(
            app[DB],
            app[CLOCK],
            app[BROADCAST],
            teacher,
            room.session.id,
            Change(action=Action.play),
        )
        pushed = await receive_type(student, "state")
        assert pushed["rev"] == state.rev and pushed["status"] == "playing"


class TeacherWs:
    def __init__(self, box: RunningBox, token: str) -> None:
        self.box = box
        self.token = token

    async def __aenter__(self) -> aiohttp.ClientWebSocketResponse:
        self.ws = await self.box.http.ws_connect(f"/websocket/?token={self.token}")
        await receive_json(self.ws)
        return self.ws

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()


async def next_rev(box: RunningBox, session_id: str) -> SessionState:
    """The session's state as stored, one rev on: what a command would publish next."""
    async with box.app[DB].read() as s:
        row = await s.get(Session, session_id)
        assert row is not None
        state = await state_of(s, row)
    state.rev += 1
    return state


async def test_lead_covers_the_boxs_own_lag(box: RunningBox) -> None:
    """A slow box (here: 400 ms between the command asking for a lead and the publish) shows
    in the next lead, so the next start still reaches everyone before its anchor."""
    room = await make_classroom(box.app[DB], box.app[CLOCK], 1)
    hub = box.app[HUB]
    async with box.http.ws_connect(f"/websocket/?token={room.headsets[0].token}") as ws:
        await receive_json(ws)
        assert hub.current_lead_ms(room.session.id) == 250
        hub.lead_ms(room.session.id)  # a command starts...
        await asyncio.sleep(0.4)  # ...and the box takes its time
        state = await next_rev(box, room.session.id)
        hub.publish(room.org.id, room.klass.id, state)
        assert (await receive_type(ws, "state"))["rev"] == state.rev
        await eventually(lambda: len(hub.send_lags_s) == 1, 2)
        assert hub.send_lags_s[0][1] >= 0.4
        assert hub.current_lead_ms(room.session.id) >= 400


async def test_a_command_takes_stale_lead_terms_as_they_are_and_they_refresh_after_publish(
    box: RunningBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sorting the room's round trips and the box's lags is never part of a command past the
    first: a command answers the terms it has (up to LEAD_TERMS_STALE_S old) and the publish
    that ends it schedules the recompute."""
    room = await make_classroom(box.app[DB], box.app[CLOCK], 1)
    hub = box.app[HUB]
    computed: list[float] = []

    def counted(values: Iterable[float], q: float) -> float:
        computed.append(q)
        return percentile(values, q)

    monkeypatch.setattr(hub_module, "percentile", counted)
    monkeypatch.setattr(hub_module, "LEAD_TERMS_TTL_S", 0.05)
    async with box.http.ws_connect(f"/websocket/?token={room.headsets[0].token}") as ws:
        await receive_json(ws)
        await eventually(lambda: any(c.rtt_s for c in hub.connections), 5)
        hub.lead_ms(room.session.id)  # the first command computes both terms
        assert sorted(computed) == [0.95]  # (no lag measured yet: nothing to sort)
        computed.clear()
        await asyncio.sleep(0.1)  # both terms are now older than the TTL
        hub.lead_ms(room.session.id)
        assert computed == []
        state = await next_rev(box, room.session.id)
        hub.publish(room.org.id, room.klass.id, state)
        assert computed == []  # not inside the publish either...
        await eventually(lambda: computed != [], 2)  # ...but right after it
        assert 0.95 in computed and 0.99 in computed
        await asyncio.sleep(0.1)
        computed.clear()
        hub.current_lead_ms(room.session.id)  # the live picture wants fresh terms: computed
        assert 0.95 in computed


async def test_a_class_that_connected_at_once_is_pinged_over_the_interval_not_in_one_burst(
    box: RunningBox,
) -> None:
    """Every watchdog round pings its share of the connections: 16 headsets, an RTT ping every
    2 s and a round every 0.25 s make two pings a round, so the watchdog's first pings of a
    class that connected together span most of the interval (all in one round, the pongs of
    300 headsets held the loop for 10-20 ms)."""
    room = await make_classroom(box.app[DB], box.app[CLOCK], 16)
    pinged: list[float] = []

    async def headset(token: str) -> None:
        async with box.http.ws_connect(f"/websocket/?token={token}", autoping=False) as ws:
            pings = 0
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.PING:
                    await ws.pong(msg.data)
                    pings += 1
                    if pings == 2:  # (the first comes with the welcome)
                        pinged.append(time.monotonic())
                        return

    await asyncio.wait_for(asyncio.gather(*(headset(h.token) for h in room.headsets)), 15)
    assert len(pinged) == 16
    assert max(pinged) - min(pinged) > 1.0, sorted(p - min(pinged) for p in pinged)
