"""The floor: a bare aiohttp broadcast server (no database, no auth) speaking the box's
WebSocket messages, driven by the same load generator so the table shows how much of each
figure is the generator and aiohttp themselves.

    python bench/floor.py --port 0     # prints "listening on http://127.0.0.1:PORT"

`/ws/session/{session_id}/?token=T`: any token joins the session's room; the token `teacher`
may send `command`s. A command bumps the rev and the new `state` is encoded once and sent to
every member.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import WSMsgType, web

LEAD_MS = 300  # same fixed lead as the peer


def now_ms() -> int:
    return int(time.time() * 1000)


class Room:
    def __init__(self, session_id: str) -> None:
        self.members: set[web.WebSocketResponse] = set()
        self.state: dict[str, Any] = {
            "type": "state",
            "session_id": session_id,
            "rev": 0,
            "status": "paused",
            "lesson": {"id": "lesson-1", "title": "Bench lesson", "apk_package": "x", "launch": {}},
            "anchor_server_ms": now_ms(),
            "anchor_position_ms": 0,
            "attention": {"on": False, "message": None},
        }

    def apply(self, command: dict[str, Any]) -> bool:
        state, action, now = self.state, command.get("action"), now_ms()
        if action == "play":
            state.update(status="playing", anchor_server_ms=now + LEAD_MS)
        elif action in ("pause", "stop"):
            if state["status"] == "playing":
                state["anchor_position_ms"] += max(0, now - state["anchor_server_ms"])
            state.update(status="paused" if action == "pause" else "stopped", anchor_server_ms=now)
        elif action == "seek":
            state["anchor_position_ms"] = int(command.get("position_ms") or 0)
            state["anchor_server_ms"] = now + (LEAD_MS if state["status"] == "playing" else 0)
        else:
            return False
        state["rev"] += 1
        return True

    async def broadcast(self) -> None:
        data = json.dumps(self.state)
        for ws in list(self.members):
            if not ws.closed:
                await ws.send_str(data)


ROOMS = web.AppKey("rooms", dict)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    session_id = request.match_info["session_id"]
    rooms: dict[str, Room] = request.app[ROOMS]
    room = rooms.setdefault(session_id, Room(session_id))
    teacher = request.query.get("token") == "teacher"
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    room.members.add(ws)
    try:
        welcome = {"type": "welcome", "protocol": 1, "server_ms": now_ms(), "session": room.state}
        await ws.send_str(json.dumps(welcome))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(msg.data)
            except ValueError:
                continue
            kind = frame.get("type")
            if kind == "time":
                t1 = now_ms()
                await ws.send_str(json.dumps({**frame, "t1": t1, "t2": now_ms()}))
            elif kind == "command" and teacher:
                if room.apply(frame):
                    await room.broadcast()
            elif kind == "event":
                ack = {"type": "event_ack", "stream": frame.get("stream"), "seq": frame.get("seq")}
                await ws.send_str(json.dumps(ack))
    finally:
        room.members.discard(ws)
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    app = web.Application()
    app[ROOMS] = {}
    app.router.add_get("/ws/session/{session_id}/", websocket)

    runner = web.AppRunner(app, access_log=None)

    async def serve() -> None:
        await runner.setup()
        # The box's accept queue (vrlms_edge/commands/serve.py LISTEN_BACKLOG): W5's 300
        # simultaneous reconnects overflow aiohttp's default of 128.
        site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
