"""Small waiting helpers shared by the live, headset and WebSocket tests."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
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


async def raw_websocket(
    url: str, path: str, *, receive_buffer: int = 4096
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket that completes the handshake and then does nothing unless told: no reads,
    no pongs. A tiny receive buffer makes 'stops reading' show up after a few KB."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


class DelayProxy:
    """A TCP proxy adding a random delay (uniform low..high seconds) to every chunk, in order,
    in both directions; `cut()` drops every connection through it."""

    def __init__(self, target: str, low: float, high: float, seed: int = 1) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.low, self.high = low, high
        self.rng = random.Random(seed)
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> DelayProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/websocket/"

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection(*self.target)
        self.writers |= {cwriter, swriter}
        for task in (
            asyncio.create_task(self._pipe(creader, swriter)),
            asyncio.create_task(self._pipe(sreader, cwriter)),
        ):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)

        sender = asyncio.create_task(deliver())
        last_due = 0.0
        try:
            while True:
                chunk = await reader.read(65536)
                # In order: a chunk never overtakes the one before it.
                last_due = max(last_due, loop.time() + self.rng.uniform(self.low, self.high))
                queue.put_nowait((last_due, chunk))
                if not chunk:
                    break
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
            writer.close()

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        for task in list(self.tasks):
            task.cancel()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
