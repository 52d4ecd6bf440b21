"""Small waiting helpers shared by the live, headset and WebSocket tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp


async def eventually(predicate: Callable[[], bool], within_s: float) -> None:
    """Wait until predicate() holds (state of the real server, observed from outside)."""
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - polling another component's state
            await asyncio.sleep(0.01)


async def receive_json(ws: aiohttp.ClientWebSocketResponse, within_s: float = 5.0) -> Any:
    msg = await ws.receive(timeout=within_s)
    assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
    return msg.json()


async def receive_type(
    ws: aiohttp.ClientWebSocketResponse, kind: str, within_s: float = 5.0
) -> Any:
    """The next message of type `kind`, skipping others (states, pictures)."""
    async with asyncio.timeout(within_s):
        while True:
            body = await receive_json(ws, within_s)
            if body.get("type") == kind:
                return body
