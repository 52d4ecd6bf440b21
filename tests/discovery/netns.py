"""Network namespaces for the discovery tests: real multicast between namespaces the test
creates (veth pairs on a bridge), never on the host's own interfaces."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Test addresses: 10.213.<net>.<host>/24, a private range unlikely to clash with anything.
_counter = itertools.count(1)


def netns_available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "needs root for ip netns"
    if shutil.which("ip") is None:
        return False, "needs iproute2 (ip)"
    probe = f"vrlms-d-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return False, f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True, ""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass
class Lan:
    """One L2 segment: a bridge in its own namespace, and member namespaces joined to it by
    veth pairs, each member with one address 10.213.<net>.<n>/24 and multicast on."""

    tag: str = field(default_factory=lambda: f"{os.getpid()}-{next(_counter)}")
    net: int = field(default_factory=lambda: 100 + os.getpid() % 100)
    members: list[str] = field(default_factory=list)
    hub: str = ""

    def __post_init__(self) -> None:
        self.hub = f"vrlms-d-hub-{self.tag}"
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        # No IGMP snooping games on the test bridge: flood multicast like a plain switch.
        ip("-n", self.hub, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", self.hub, "link", "set", "br0", "up")

    def add(self, letter: str) -> str:
        """A new namespace on the LAN; its veth is `eth0` with address .<n>."""
        n = len(self.members) + 1
        ns = f"vrlms-d-{letter}-{self.tag}"
        ip("netns", "add", ns)
        self.members.append(ns)
        outer = f"vd{n}-{self.tag}"[:15]
        ip(
            "link",
            "add",
            outer,
            "netns",
            self.hub,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        ip("-n", self.hub, "link", "set", outer, "master", "br0", "up")
        # IPv6 duplicate address detection would hold link-local addresses back ~1 s.
        for conf in ("all", "default", "eth0"):
            subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-q",
                    "-w",
                    f"net.ipv6.conf.{conf}.accept_dad=0",
                ],
                capture_output=True,
            )
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", self.address(n) + "/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "multicast", "on", "up")
        return ns

    def address(self, n: int) -> str:
        return f"10.213.{self.net}.{n}"

    def close(self) -> None:
        for ns in [*self.members, self.hub]:
            ip("netns", "del", ns, check=False)
        self.members.clear()


def netns_exec(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def vrlms(ns: str, *args: str) -> list[str]:
    return netns_exec(ns, [sys.executable, "-m", "vrlms_edge", *args])


def mdns_env(**extra: str) -> dict[str, str]:
    """Environment for box and client inside a namespace: mDNS on, default interfaces (inside
    the namespace that is its veth only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRLMS_")}
    env.update({"VRLMS_MDNS": "on", "VRLMS_MDNS_INTERFACES": "", **extra})
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env
