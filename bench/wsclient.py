"""A lean RFC 6455 WebSocket client for the load generator's simulated headsets.

The generator shares the machine's two cores with the server it measures, so its cost per
received frame is part of every latency it reports. aiohttp's client spent about 90 µs of CPU
per delivered `state` (one task wake-up, a queue and a message object per frame); this client
parses frames straight in `data_received` and stamps each text frame with the instant its bytes
reached the process, which is what "received" means for a headset. It speaks what the targets
need and nothing more: one HTTP/1.1 upgrade without extensions, masked text frames out,
text/binary/ping/close frames in (fragmented messages are reassembled), pong for every ping.

    client = await connect("ws://127.0.0.1:8080/websocket/?token=T", on_text)
    client.send_text('{"type":"time","id":1,"t0":0}')
    client.drop()      # TCP close without a close frame (a headset losing power)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from collections.abc import Callable
from urllib.parse import urlsplit

# A text message (its UTF-8 bytes: msgspec decodes them as they are) and the monotonic
# instant its last bytes reached this process.
TextHandler = Callable[[bytes, float], None]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_HEADER_MAX = 16384  # a longer handshake answer is not a WebSocket server's
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeError(ConnectionError):
    """The server did not switch protocols."""


def _xor(payload: bytes, key: bytes) -> bytes:
    """The payload XORed with the repeated 4-byte key (one big-int XOR): masks and unmasks."""
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


def _mask(payload: bytes) -> bytes:
    """A masked frame body: 4-byte key, then the payload XORed with it."""
    key = os.urandom(4)
    return key + _xor(payload, key)


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + _mask(payload)


class WsClient(asyncio.Protocol):
    """One connection. `on_text` runs inside `data_received`; `closed` resolves with the close
    code the server sent (1006 when the TCP connection ended without one)."""

    def __init__(self, on_text: TextHandler, request: bytes, accept: bytes) -> None:
        self.on_text = on_text
        self._request = request
        self._accept = accept
        self._rest = b""  # bytes of a frame not complete yet
        self._upgraded = False
        self._fragments: list[bytes] = []
        self._fragment_op = OP_TEXT
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self._rest + data if self._rest else data
        if not self._upgraded:
            buf = self._handshake(buf)
            if not self._upgraded:
                self._rest = buf
                return
        at, end = 0, len(buf)
        while end - at >= 2:
            b0, b1 = buf[at], buf[at + 1]
            size = b1 & 0x7F
            head = 2
            if size == 126:
                if end - at < 4:
                    break
                size = int.from_bytes(buf[at + 2 : at + 4], "big")
                head = 4
            elif size == 127:
                if end - at < 10:
                    break
                size = int.from_bytes(buf[at + 2 : at + 10], "big")
                head = 10
            key = b""
            if b1 & 0x80:  # servers do not mask; accepted anyway
                if end - at < head + 4:
                    break
                key = buf[at + head : at + head + 4]
                head += 4
            if end - at < head + size:
                break
            payload = buf[at + head : at + head + size]
            at += head + size
            if key:
                payload = _xor(payload, key)
            if b0 == 0x81:  # a whole text frame: nearly every frame
                self.on_text(payload, now)
            else:
                self._frame(b0 & 0x80 != 0, b0 & 0x0F, payload, now)
        self._rest = buf[at:] if at < end else b""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(1006)

    # -- frames

    def _handshake(self, buf: bytes) -> bytes:
        """Read the upgrade answer off the front of `buf`; returns what follows it."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _HEADER_MAX:
                self._fail(HandshakeError("handshake answer too long"))
            return buf
        head = buf[:end].decode("latin-1").split("\r\n")
        status = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if len(status) < 2 or status[1] != "101":
            self._fail(HandshakeError(f"no upgrade: {head[0]}"))
        elif headers.get("sec-websocket-accept", "").encode() != self._accept:
            self._fail(HandshakeError("wrong Sec-WebSocket-Accept"))
        else:
            self._upgraded = True
            self.opened.set_result(None)
        return buf[end + 4 :]

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def _frame(self, fin: bool, opcode: int, payload: bytes, now: float) -> None:
        if opcode == OP_PING:
            self._write(frame(OP_PONG, payload))
            return
        if opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.closed.done():
                self.closed.set_result(code)
            self._write(frame(OP_CLOSE, payload[:2]))
            if self.transport is not None:
                self.transport.close()
            return
        if opcode == OP_PONG:
            return
        if opcode != OP_CONT:
            self._fragment_op = opcode
        if not fin:
            self._fragments.append(payload)
            return
        if self._fragments:
            payload = b"".join([*self._fragments, payload])
            self._fragments = []
        if self._fragment_op == OP_TEXT:
            self.on_text(payload, now)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- what a headset does

    @property
    def open(self) -> bool:
        return self.opened.done() and not self.closed.done() and self.transport is not None

    def send_text(self, text: str) -> bool:
        """Queue one text frame; False once the connection is gone."""
        if not self.open or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(frame(OP_TEXT, text.encode()))
        return True

    def close(self, code: int = 1000) -> None:
        """A clean close: our close frame, then the TCP close."""
        if self.open:
            self._write(frame(OP_CLOSE, code.to_bytes(2, "big")))
        self.drop()

    def drop(self) -> None:
        """End the TCP connection without a close frame."""
        if self.transport is not None:
            self.transport.close()


async def connect(url: str, on_text: TextHandler) -> WsClient:
    """Open a WebSocket to a ws:// URL (bound it with asyncio.timeout); raises OSError or
    HandshakeError."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: WsClient(on_text, request, accept), host, port)
    await client.opened
    return client
