"""Which network interfaces mDNS uses: the `mdns_interfaces` setting resolved against the
machine's current adapters (ifaddr), for both the advertiser and the browser."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import ifaddr
from zeroconf import IPVersion, Zeroconf

ENV_INTERFACES: Final = "VRLMS_MDNS_INTERFACES"
# Linux socket options (not exported by Python's socket module): values from <linux/in.h>
# and <linux/in6.h>.
_IP_MULTICAST_ALL: Final = 49
_IPV6_MULTICAST_ALL: Final = 29


@dataclass(frozen=True, slots=True)
class InterfaceChoice:
    """The outcome of resolving the setting on the adapters present right now.

    `sockets` is what zeroconf opens multicast sockets on: one IPv4 address per adapter and
    one IPv6 interface index per adapter (a second socket on the same link would only send
    every packet twice). `addresses` is every chosen address, for the A/AAAA records."""

    sockets: tuple[str | int, ...]
    addresses: tuple[str, ...]
    ip_version: IPVersion

    @property
    def empty(self) -> bool:
        return not self.sockets


def _ip_text(ip: ifaddr.IP) -> str:
    # ifaddr gives IPv6 as (address, flowinfo, scope_id); the scope lives in the socket index.
    return ip.ip if isinstance(ip.ip, str) else str(ip.ip[0])


def _wanted(adapter: ifaddr.Adapter, ip: ifaddr.IP, wanted: Sequence[str]) -> bool:
    address = ipaddress.ip_address(_ip_text(ip))
    if not wanted:
        # Default: every non-loopback address. 127.0.1.1 (Debian's hostname alias) is loopback.
        return not address.is_loopback
    for item in wanted:
        if item in (adapter.name, getattr(adapter, "nice_name", None)):
            return True
        try:
            if ipaddress.ip_address(item) == address:
                return True
        except ValueError:
            continue
    return False


def choose_interfaces(
    adapters: Iterable[ifaddr.Adapter], wanted: Sequence[str] = ()
) -> InterfaceChoice:
    """Resolve `wanted` (IP addresses or interface names; empty = all non-loopback) on
    `adapters`. Deterministic for a given input, so two polls compare equal when nothing
    changed."""
    sockets: list[str | int] = []
    addresses: list[str] = []
    has_v6 = False
    for adapter in sorted(adapters, key=lambda a: (a.index or 0, a.name)):
        chosen = [ip for ip in adapter.ips if _wanted(adapter, ip, wanted)]
        v4 = sorted(_ip_text(ip) for ip in chosen if ip.is_IPv4)
        v6 = sorted(_ip_text(ip) for ip in chosen if ip.is_IPv6)
        if v4:
            sockets.append(v4[0])
        if v6 and adapter.index is not None:
            sockets.append(int(adapter.index))
            has_v6 = True
        addresses.extend(v4 + v6)
    has_v4 = any(isinstance(s, str) for s in sockets)
    if has_v4 and has_v6:
        version = IPVersion.All
    elif has_v6:
        version = IPVersion.V6Only
    else:
        version = IPVersion.V4Only
    return InterfaceChoice(tuple(sockets), tuple(addresses), version)


def current_interfaces(wanted: Sequence[str] = ()) -> InterfaceChoice:
    return choose_interfaces(ifaddr.get_adapters(), wanted)


def interfaces_from_env() -> list[str]:
    """`VRLMS_MDNS_INTERFACES` as a list (empty when unset): library callers honour it too."""
    raw = os.environ.get(ENV_INTERFACES, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


async def confine_to_joined_groups(zc: Zeroconf) -> None:
    """Make zeroconf's sockets receive multicast only on the interfaces they joined.

    Linux delivers to a socket bound to *:5353 every group joined by any socket of the
    machine on any interface (IP_MULTICAST_ALL defaults to 1). Without this, a box told to
    stay on 127.0.0.1 would still hear, and answer, queries from the LAN whenever another
    mDNS program runs. Call again after zeroconf rebuilds sockets (interface updates)."""
    if not sys.platform.startswith("linux"):
        return
    await zc.async_wait_for_start()
    engine = zc.engine
    # zeroconf keeps its sockets on the engine; if that ever changes we confine nothing,
    # and the loopback-only namespace test fails loudly.
    for wrapped in [*getattr(engine, "readers", []), *getattr(engine, "senders", [])]:
        sock: socket.socket = wrapped.sock
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        if sock.family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL, 0)
