"""discover() and `vrlms-edge discover`: the headset library's view of the boxes, and the
VRLMS_MDNS / VRLMS_MDNS_INTERFACES safety switches."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import cli_env
from tests.discovery.conftest import Namespaces
from tests.discovery.netns import Lan

# discover() from the library, run inside a namespace; prints the boxes as JSON.
LIBRARY_CALL = """
import asyncio, dataclasses, json
from vrlms_edge.discovery.browse import discover
boxes = asyncio.run(discover(3.0, want=1))
print(json.dumps([dataclasses.asdict(b) | {"url": b.base_url()} for b in boxes]))
"""


def test_discover_refuses_when_mdns_is_off() -> None:
    # Runs on the host: with mDNS off nothing may be sent, so the command must not browse.
    done = subprocess.run(
        [sys.executable, "-m", "vrlms_edge", "discover", "--timeout", "0.1"],
        capture_output=True,
        text=True,
        env=cli_env(VRLMS_MDNS="off"),
        timeout=30,
    )
    assert done.returncode == 2
    assert "mDNS is off" in done.stderr


@pytest.mark.netns
def test_library_discover_finds_box_and_honours_interface_setting(
    lan: Lan, spaces: Namespaces
) -> None:
    a, b = lan.add("a"), lan.add("b")
    spaces.box(a, name="Room 7").wait_advertised()
    argv = [sys.executable, "-c", LIBRARY_CALL]

    def call(**env: str) -> list[dict[str, object]]:
        done = spaces.run(b, argv, **env)
        assert done.returncode == 0, done.stderr
        found: list[dict[str, object]] = json.loads(done.stdout)
        return found

    with ThreadPoolExecutor(2) as pool:
        default = pool.submit(call)
        loopback_only = pool.submit(call, VRLMS_MDNS_INTERFACES="127.0.0.1")
    [box] = default.result()
    assert box["name"] == "Room 7"
    assert box["port"] == 8080
    assert box["url"] == f"http://{lan.address(1)}:8080"
    assert box["txt"]["api"] == "/api/"  # type: ignore[index]
    # Told to stay on loopback, the library does not look at the LAN.
    assert loopback_only.result() == []
