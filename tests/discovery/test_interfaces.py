"""The mdns_interfaces setting resolved on a set of adapters (no sockets opened)."""

from __future__ import annotations

import ifaddr
from zeroconf import IPVersion

from vrlms_edge.discovery.interfaces import choose_interfaces

LO = ifaddr.Adapter(
    "lo",
    "lo",
    [
        ifaddr.IP("127.0.0.1", 8, "lo"),
        ifaddr.IP("127.0.1.1", 8, "lo"),
        ifaddr.IP(("::1", 0, 0), 128, "lo"),
    ],
    index=1,
)
ETH = ifaddr.Adapter(
    "eth0",
    "eth0",
    [
        ifaddr.IP("192.168.1.20", 24, "eth0"),
        ifaddr.IP("192.168.1.21", 24, "eth0"),
        ifaddr.IP(("fe80::1", 0, 2), 64, "eth0"),
    ],
    index=2,
)
WLAN = ifaddr.Adapter("wlan0", "wlan0", [ifaddr.IP("10.9.0.7", 16, "wlan0")], index=3)


def test_default_is_every_non_loopback_address_v4_and_v6() -> None:
    choice = choose_interfaces([LO, ETH, WLAN])
    assert choice.addresses == ("192.168.1.20", "192.168.1.21", "fe80::1", "10.9.0.7")
    # One IPv4 socket and one IPv6 interface index per adapter, never loopback.
    assert choice.sockets == ("192.168.1.20", 2, "10.9.0.7")
    assert choice.ip_version == IPVersion.All


def test_hostname_alias_never_chosen_by_default() -> None:
    assert "127.0.1.1" not in choose_interfaces([LO, ETH]).addresses
    assert choose_interfaces([LO]).empty


def test_loopback_only_when_asked() -> None:
    choice = choose_interfaces([LO, ETH, WLAN], ["127.0.0.1"])
    assert choice.addresses == ("127.0.0.1",)
    assert choice.sockets == ("127.0.0.1",)
    assert choice.ip_version == IPVersion.V4Only


def test_by_interface_name_and_by_address() -> None:
    assert choose_interfaces([LO, ETH, WLAN], ["wlan0"]).addresses == ("10.9.0.7",)
    choice = choose_interfaces([LO, ETH, WLAN], ["fe80::1", "10.9.0.7"])
    assert choice.addresses == ("fe80::1", "10.9.0.7")
    assert choice.sockets == (2, "10.9.0.7")


def test_unknown_names_choose_nothing() -> None:
    assert choose_interfaces([LO, ETH], ["eth9", "10.1.1.1"]).empty


def test_same_adapters_compare_equal() -> None:
    # The advertiser re-announces only when the choice changes between two polls.
    assert choose_interfaces([WLAN, ETH, LO]) == choose_interfaces([LO, ETH, WLAN])
    moved = ifaddr.Adapter("wlan0", "wlan0", [ifaddr.IP("10.9.0.8", 16, "wlan0")], index=3)
    assert choose_interfaces([LO, ETH, moved]) != choose_interfaces([LO, ETH, WLAN])
