"""Find boxes on the network: `discover()` for the headset library and `vrlms-edge discover`,
and `BoxBrowser` for callers that follow boxes appearing, changing and leaving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from vrlms_edge.discovery.interfaces import (
    confine_to_joined_groups,
    current_interfaces,
    interfaces_from_env,
)
from vrlms_edge.discovery.service import SERVICE_TYPE, BoxAdvert, FoundBox

__all__ = ["BoxBrowser", "BoxEvent", "FoundBox", "discover"]

log = logging.getLogger(__name__)

# How long one resolve (SRV/TXT/A/AAAA) may take; a box that answers PTR but not this within
# 3 s is not usable anyway.
RESOLVE_TIMEOUT_MS: Final = 3000
# A re-announcement with the cache-flush bit makes older records of the same name expire one
# second later (RFC 6762 s10.2); resolving again after that drops a box's stale addresses.
FLUSH_SETTLE_S: Final = 1.1


@dataclass(frozen=True, slots=True)
class BoxEvent:
    kind: Literal["added", "updated", "removed"]
    # The service name's instance part (the box's advertised name).
    name: str
    box: FoundBox | None


class BoxBrowser:
    """Browse `_vrlms._tcp` on the chosen interfaces; `found` is the current view and
    `events` receives every change in order.

    `interfaces`: IP addresses or interface names; None = $VRLMS_MDNS_INTERFACES, else all
    non-loopback interfaces."""

    def __init__(self, interfaces: Sequence[str] | None = None) -> None:
        self._wanted = list(interfaces) if interfaces is not None else interfaces_from_env()
        self.found: dict[str, FoundBox] = {}
        self.events: asyncio.Queue[BoxEvent] = asyncio.Queue()
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        choice = current_interfaces(self._wanted)
        if choice.empty:
            log.warning("mDNS: no interface to browse on (wanted %s)", self._wanted or "any")
            return self
        self._zc = AsyncZeroconf(interfaces=list(choice.sockets), ip_version=choice.ip_version)
        await confine_to_joined_groups(self._zc.zeroconf)
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._zc is not None:
            await self._zc.async_close()

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Called by zeroconf on the event loop; resolving needs awaiting, so it is a task.
        if state_change is ServiceStateChange.Removed:
            instance = BoxAdvert.settled_instance(AsyncServiceInfo(service_type, name))
            if self.found.pop(name, None) is not None:
                self.events.put_nowait(BoxEvent("removed", instance, None))
            return
        settle = state_change is ServiceStateChange.Updated
        task = asyncio.get_running_loop().create_task(
            self._resolve(zeroconf, service_type, name, settle)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(
        self, zeroconf: Zeroconf, service_type: str, name: str, settle: bool
    ) -> None:
        await self._resolve_once(zeroconf, service_type, name)
        if settle:
            await asyncio.sleep(FLUSH_SETTLE_S)
            await self._resolve_once(zeroconf, service_type, name, known_only=True)

    async def _resolve_once(
        self, zeroconf: Zeroconf, service_type: str, name: str, known_only: bool = False
    ) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
            log.debug("mDNS: %s did not resolve", name)
            return
        if known_only and name not in self.found:
            return  # removed meanwhile (goodbye): do not bring it back from the cache
        box = BoxAdvert.found_box(info)
        previous = self.found.get(name)
        if previous == box:
            return
        self.found[name] = box
        self.events.put_nowait(BoxEvent("added" if previous is None else "updated", box.name, box))


async def discover(
    timeout_s: float, interfaces: Sequence[str] | None = None, *, want: int | None = None
) -> list[FoundBox]:
    """Boxes seen within `timeout_s` seconds (sorted by name). With `want`, return as soon as
    that many boxes were resolved (a headset that needs one box need not wait the full time)."""
    async with BoxBrowser(interfaces) as browser:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while want is None or len(browser.found) < want:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(browser.events.get(), remaining)
        return sorted(browser.found.values(), key=lambda b: (b.name, b.port))
