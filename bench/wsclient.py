"""A lean RFC 6455 WebSocket client for the load generator's simulated headsets.

The generator shares the machine's two cores with the server it measures. aiohttp's client
spent about 90 µs of CPU per delivered `state` (one task wake-up, a queue and a message object
per frame); this client reads its socket itself (`recvmsg` when the event loop finds it
readable) and parses frames right there. Each text frame is stamped with the instant its bytes
reached the headset's socket: the kernel's receive timestamp (SO_TIMESTAMPNS), read with the
bytes. One generator process stands in for dozens of headsets and reads their sockets one after
the other; a real headset has its own CPU, so when this process got round to a socket is not
when that headset received its state (`read_at` is that instant, for who wants it). It speaks
what the targets need and nothing more: one HTTP/1.1 upgrade without extensions, masked text
frames out, text/binary/ping/close frames in (fragmented messages are reassembled), pong for
every ping.

    client = await connect("ws://127.0.0.1:8080/websocket/?token=T", on_text)
    client.send_text('{"type":"time","id":1,"t0":0}')
    client.drop()      # TCP close without a close frame (a headset losing power)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

# A text message (its UTF-8 bytes: msgspec decodes them as they are) and the instant, on the
# monotonic clock, its last bytes reached the socket.
TextHandler = Callable[[bytes, float], None]

SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value
_STAMP: Final = struct.Struct("qq")  # struct timespec on a 64-bit kernel
_ANCILLARY: Final = socket.CMSG_SPACE(_STAMP.size)
_READ_MAX: Final = 1 << 16

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


class WsClient:
    """One connection on a connected non-blocking socket. `on_text` runs as its bytes are read;
    `closed` resolves with the close code the server sent (1006 when the TCP connection ended
    without one)."""

    def __init__(
        self, on_text: TextHandler, request: bytes, accept: bytes, sock: socket.socket
    ) -> None:
        self.on_text = on_text
        self._request = request
        self._accept = accept
        self._rest = b""  # bytes of a frame not complete yet
        self._upgraded = False
        self._fragments: list[bytes] = []
        self._fragment_op = OP_TEXT
        self._sock: socket.socket | None = sock
        self._out = bytearray()  # what the kernel did not take yet
        self._loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[int] = self._loop.create_future()
        self.close_reason = ""  # what the server's close frame said
        self.read_at = 0.0  # when this process read the bytes being handled (monotonic)

    def _start(self) -> None:
        assert self._sock is not None
        self._loop.add_reader(self._sock.fileno(), self._readable)
        self._write(self._request)

    # -- the socket

    def _readable(self) -> None:
        if self._sock is None:
            return
        try:
            data, ancillary, _flags, _addr = self._sock.recvmsg(_READ_MAX, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        self.read_at = arrived = time.monotonic()
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = _STAMP.unpack_from(value)
                waited = time.time() - (seconds + nanoseconds / 1e9)  # in the kernel's queue
                arrived -= min(max(waited, 0.0), arrived)
        self._received(data, arrived)

    def _write(self, data: bytes) -> None:
        if self._sock is None:
            return
        waiting = bool(self._out)  # (then the socket is watched for room already)
        self._out += data
        if not waiting:
            self._flush()

    def _flush(self) -> None:
        """Hand the kernel what it takes of `_out`; watch the socket for room while some is
        left."""
        if self._sock is None:
            return
        try:
            sent = self._sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(exc)
            return
        del self._out[:sent]
        if self._out:
            self._loop.add_writer(self._sock.fileno(), self._flush)
        else:
            self._loop.remove_writer(self._sock.fileno())

    def _lost(self, exc: Exception | None) -> None:
        """The connection is over (`exc`: why, if it failed): stop watching the socket and
        close it."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
            sock.close()
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(1006)

    def _received(self, data: bytes, now: float) -> None:
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

    # -- frames

    def _handshake(self, buf: bytes) -> bytes:
        """Read the upgrade answer off the front of `buf`; returns what follows it."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _HEADER_MAX:
                self._lost(HandshakeError("handshake answer too long"))
            return buf
        head = buf[:end].decode("latin-1").split("\r\n")
        status = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if len(status) < 2 or status[1] != "101":
            self._lost(HandshakeError(f"no upgrade: {head[0]}"))
        elif headers.get("sec-websocket-accept", "").encode() != self._accept:
            self._lost(HandshakeError("wrong Sec-WebSocket-Accept"))
        else:
            self._upgraded = True
            self.opened.set_result(None)
        return buf[end + 4 :]

    def _frame(self, fin: bool, opcode: int, payload: bytes, now: float) -> None:
        if opcode == OP_PING:
            self._write(frame(OP_PONG, payload))
            return
        if opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.closed.done():
                self.closed.set_result(code)
                self.close_reason = payload[2:].decode(errors="replace")
            self._write(frame(OP_CLOSE, payload[:2]))
            self._lost(None)
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

    # -- what a headset does

    @property
    def open(self) -> bool:
        return self._sock is not None and self._upgraded and not self.closed.done()

    def send_text(self, text: str) -> bool:
        """Send (or queue) one text frame; False once the connection is gone."""
        if not self.open:
            return False
        self._write(frame(OP_TEXT, text.encode()))
        return True

    def close(self, code: int = 1000) -> None:
        """A clean close: our close frame, then the TCP close."""
        if self.open:
            self._write(frame(OP_CLOSE, code.to_bytes(2, "big")))
        self.drop()

    def drop(self) -> None:
        """End the TCP connection without a close frame."""
        self._lost(None)


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
    addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = addresses[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    client = WsClient(on_text, request, accept, sock)
    client._start()
    try:
        await client.opened
    except BaseException:  # a refused upgrade, or the caller's timeout
        client.drop()
        raise
    return client
