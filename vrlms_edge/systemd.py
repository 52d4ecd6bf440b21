"""Talking to systemd: sd_notify (READY/STATUS/STOPPING/WATCHDOG) over $NOTIFY_SOCKET.

The protocol is one AF_UNIX datagram per message, so no library is needed. Every function is
a no-op when the box is not run by systemd (no $NOTIFY_SOCKET). The watchdog is fed from a
task on the event loop itself: when the loop is stuck, the pings stop and systemd restarts
the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

# systemd wants a ping at least every WatchdogSec; pinging twice per period leaves a margin
# for a loop that is busy but not stuck.
WATCHDOG_PINGS_PER_PERIOD: Final = 2
# While starting, each ping asks systemd for this much more start time: a migration of a big
# database may outlast TimeoutStartSec, but a start whose event loop hangs still times out.
START_EXTENSION_S: Final = 30.0


def notify_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The notification socket path ('@' prefix = abstract namespace), or None."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address or not (address.startswith("/") or address.startswith("@")):
        return None
    return address


def notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `KEY=value` fields to systemd. Returns False when not under systemd or on error
    (a lost notification must never take the box down)."""
    address = notify_address(environ)
    if address is None:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings, or None when systemd does not watch this process."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    # WATCHDOG_PID, when set, names the process systemd watches; it may be a parent.
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 1_000_000 / WATCHDOG_PINGS_PER_PERIOD


async def _feed_watchdog(interval_s: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)


async def extend_start_timeout() -> None:
    """Run until cancelled (once READY=1 is sent): keeps the start timeout moving while the
    event loop is alive."""
    while True:
        notify(f"EXTEND_TIMEOUT_USEC={int(START_EXTENSION_S * 1_000_000)}")
        await asyncio.sleep(START_EXTENSION_S / 3)


def _block_loop(signum: int, frame: object) -> None:
    """Debug only (setting debug_block_signal): freeze the event loop, as a deadlock would,
    so that tests can see the watchdog restart the service."""
    log.error("signal %d: blocking the event loop on purpose (debug_block_signal)", signum)
    while True:
        time.sleep(3600)


async def watchdog_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: feeds the systemd watchdog while the app runs."""
    # Here, not at the top: `serve` imports this module before the web stack is loaded.
    from vrlms_edge.keys import SETTINGS

    if app[SETTINGS].debug_block_signal:
        signal.signal(signal.SIGUSR2, _block_loop)
    interval = watchdog_interval_s()
    task = None
    if interval is not None:
        log.info("feeding the systemd watchdog every %.1f s", interval)
        task = asyncio.create_task(_feed_watchdog(interval), name="systemd-watchdog")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
