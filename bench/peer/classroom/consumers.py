"""The peer's classroom WebSocket: the same fan-out as the box, written the Channels way.

Each connection joins the group of its session; a teacher `command` updates the session row
(one transaction) and `group_send`s the new `state` to every member; `time`, `event` (stored,
then `event_ack`), `status` (latest kept) and `ack` follow the box's protocol.
"""

import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import IntegrityError, transaction

from classroom.models import Event, LessonSession

# A start is anchored this far in the future so headsets begin together (fixed: the peer
# has no round-trip measurement).
LEAD_MS = 300
LESSON = {"title": "Bench lesson", "apk_package": "com.example.lesson", "launch": {}}


def now_ms() -> int:
    return int(time.time() * 1000)


def state_of(row: LessonSession) -> dict:
    return {
        "type": "state",
        "session_id": row.id,
        "rev": row.rev,
        "status": row.status,
        "lesson": {"id": row.lesson_id, **LESSON} if row.lesson_id else None,
        "anchor_server_ms": row.anchor_server_ms,
        "anchor_position_ms": row.anchor_position_ms,
        "attention": {"on": row.attention_on, "message": None},
    }


@database_sync_to_async
def load_state(session_id: str) -> dict | None:
    row = LessonSession.objects.filter(pk=session_id).first()
    return state_of(row) if row else None


@database_sync_to_async
def apply_command(session_id: str, command: dict) -> dict | None:
    with transaction.atomic():
        row = LessonSession.objects.select_for_update().filter(pk=session_id).first()
        if row is None:
            return None
        action = command.get("action")
        now = now_ms()
        position = command.get("position_ms")
        if action == "play":
            row.status = "playing"
            row.lesson_id = row.lesson_id or "lesson-1"
            row.anchor_server_ms = now + int(command.get("lead_ms") or LEAD_MS)
            if position is not None:
                row.anchor_position_ms = int(position)
        elif action in ("pause", "stop"):
            if row.status == "playing":
                row.anchor_position_ms += max(0, now - row.anchor_server_ms)
            row.anchor_server_ms = now
            row.status = "paused" if action == "pause" else "stopped"
        elif action == "seek":
            row.anchor_position_ms = int(position or 0)
            row.anchor_server_ms = now + (LEAD_MS if row.status == "playing" else 0)
        elif action == "attention":
            row.attention_on = bool(command.get("on"))
        else:
            return None
        row.rev += 1
        row.save()
        return state_of(row)


@database_sync_to_async
def store_event(user_id: int, event: dict) -> None:
    try:
        with transaction.atomic():
            Event.objects.create(
                user_id=user_id,
                stream=str(event.get("stream", "")),
                seq=int(event.get("seq", 0)),
                kind=str(event.get("kind", "")),
                t_ms=int(event.get("t_ms", 0)),
                data=event.get("data") or {},
            )
    except IntegrityError:
        pass  # a re-sent (stream, seq) is stored once


class ClassroomConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        token = self.scope.get("token")
        if token is None:
            await self.accept()
            await self.close(code=4401)
            return
        self.role = token.role
        self.user_id = token.user_id
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        self.group = f"session_{self.session_id}"
        self.last_status = None
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(
            {
                "type": "welcome",
                "protocol": 1,
                "server_ms": now_ms(),
                "role": self.role,
                "user": {"id": str(token.user_id), "nickname": token.user.username},
                "device": None,
                "session": await load_state(self.session_id),
                "heartbeat_s": 20,
            }
        )

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        kind = content.get("type")
        if kind == "time":
            t1 = now_ms()
            await self.send_json(
                {"type": "time", "id": content.get("id"), "t0": content.get("t0"), "t1": t1,
                 "t2": now_ms()}
            )
        elif kind == "command" and self.role == "teacher":
            state = await apply_command(self.session_id, content)
            if state is None:
                await self.send_json({"type": "error", "id": content.get("id"),
                                      "error": {"code": "invalid", "message": "bad command"}})
                return
            await self.channel_layer.group_send(
                self.group, {"type": "session.state", "state": state}
            )
        elif kind == "event":
            await store_event(self.user_id, content)
            await self.send_json(
                {"type": "event_ack", "stream": content.get("stream"), "seq": content.get("seq")}
            )
        elif kind == "status":
            self.last_status = content

    async def session_state(self, event):
        await self.send_json(event["state"])
