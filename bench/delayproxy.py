"""An asyncio TCP proxy that delays every chunk by a random 20-150 ms (order kept), standing
in for a jittery Wi-Fi link (`tc netem` is not available here).

    python bench/delayproxy.py --target 127.0.0.1:8080 [--min-ms 20 --max-ms 150]
    # prints "listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

CHUNK = 65536  # read size; a WebSocket frame of ours is far smaller


async def pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lo: float, hi: float
) -> None:
    """Copy reader -> writer, each chunk delivered at max(previous, now + jitter): the delay
    varies per chunk but bytes never overtake each other (TCP keeps order)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.create_task(deliver())
    last = 0.0
    try:
        while True:
            data = await reader.read(CHUNK)
            last = max(last, time.monotonic() + random.uniform(lo, hi))
            await queue.put((last, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        pass
    finally:
        sender.cancel()
        writer.close()


async def serve(target_host: str, target_port: int, port: int, lo: float, hi: float) -> None:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(target_host, target_port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pump(cr, uw, lo, hi), pump(ur, cw, lo, hi))

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--min-ms", type=float, default=20.0)
    parser.add_argument("--max-ms", type=float, default=150.0)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(serve(host, int(port), args.port, args.min_ms / 1000, args.max_ms / 1000))


if __name__ == "__main__":
    main()
