"""A TCP proxy on loopback that breaks the link between box and org server on purpose.

Each new client connection takes the next fault from `plan` (then `pick`, then none):
- "down": accept and close at once (link gone);
- "cut_request": forward only the first bytes of the request, then close both sides;
- "cut_response": forward the whole request, then only the first bytes of the answer;
- "http500": answer 500 without forwarding;
- "delay": hold the request `delay_s` before forwarding.
`seen_push` is set when a push request passes through (for killing a side mid-push).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, deque
from collections.abc import Callable
from typing import Final

FAULTS: Final = ("cut_request", "cut_response", "http500", "delay")
# Enough to hold a request line and some headers, never a whole push.
CUT_AT: Final = 60


class FaultProxy:
    def __init__(self, target_port: int, *, delay_s: float = 0.3) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.down = False
        self.plan: deque[str] = deque()
        self.pick: Callable[[], str | None] = lambda: None
        self.counts: Counter[str] = Counter()
        self.seen_push = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def chaos(self, rng: random.Random, p: float) -> None:
        """From now on each connection fails with probability p, with a random fault."""
        self.pick = lambda: rng.choice(FAULTS) if rng.random() < p else None

    def calm(self) -> None:
        self.plan.clear()
        self.pick = lambda: None
        self.down = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.counts["down"] += 1
            return
        fault = self.plan.popleft() if self.plan else self.pick()
        if fault:
            self.counts[fault] += 1
        if fault == "http500":
            await reader.read(CUT_AT)
            writer.write(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )
            await writer.drain()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self.counts["target_down"] += 1
            return
        try:
            if fault == "cut_request":
                first = await reader.read(CUT_AT)
                up_writer.write(first[: CUT_AT // 2])
                await up_writer.drain()
                return
            if fault == "delay":
                await asyncio.sleep(self.delay_s)
            downstream = asyncio.create_task(
                self._pipe(up_reader, writer, limit=CUT_AT if fault == "cut_response" else None)
            )
            upstream = asyncio.create_task(self._pipe(reader, up_writer, watch=True))
            done, pending = await asyncio.wait(
                {downstream, upstream}, return_when=asyncio.FIRST_COMPLETED
            )
            if downstream in done:
                upstream.cancel()
            else:
                # Client finished sending; let the answer finish (or be cut).
                with contextlib.suppress(BaseException):
                    await downstream
            for t in pending:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        finally:
            up_writer.close()

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        *,
        limit: int | None = None,
        watch: bool = False,
    ) -> None:
        sent = 0
        while True:
            chunk = await src.read(65536)
            if not chunk:
                return
            if watch and b"POST /api/sync/push" in chunk:
                self.seen_push.set()
            if limit is not None and sent + len(chunk) > limit:
                dst.write(chunk[: limit - sent])
                await dst.drain()
                return
            dst.write(chunk)
            await dst.drain()
            sent += len(chunk)
