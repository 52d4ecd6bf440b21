"""The box's mDNS advertisement, seen from another network namespace over real multicast:
found with the right TXT, new port after a restart, new address re-announced, name conflicts
renamed, goodbye on shutdown, loopback-only stays on loopback, and an independent client
(a hand-built DNS-SD query, and avahi when available) sees it."""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import RunningBox, need, start_box, stop_box
from tests.conftest import test_settings as box_settings
from tests.discovery.avahi import Avahi, avahi_available
from tests.discovery.conftest import WAIT_S, Namespaces
from tests.discovery.netns import Lan, ip
from vrlms_edge.discovery.advertiser import single_org_slug
from vrlms_edge.keys import DB
from vrlms_edge.store.models import Org


def fetch(spaces: Namespaces, ns: str, port: int, path: str) -> str:
    """GET a page of the box from inside its namespace."""
    code = (
        "import urllib.request; "
        f"print(urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=5).read()"
        ".decode())"
    )
    done = spaces.run(ns, [sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr
    return done.stdout


def health(spaces: Namespaces, ns: str, port: int) -> dict[str, object]:
    body: dict[str, object] = json.loads(fetch(spaces, ns, port, "/api/health"))
    return body


@pytest.mark.netns
def test_client_finds_box_with_protocol_txt(lan: Lan, spaces: Namespaces) -> None:
    a, b = lan.add("a"), lan.add("b")
    watcher = spaces.watch(b)
    spaces.box(a, name="Room 12")
    event, _ = watcher.wait_for("box added", lambda e: e["event"] == "added")
    with ThreadPoolExecutor(2) as pool:
        one_shot = pool.submit(spaces.discover, b)  # `vrlms-edge discover --json`
        box_id = health(spaces, a, 8080)["box"]["id"]  # type: ignore[index]
    assert event["name"] == "Room 12"
    assert event["port"] == 8080
    assert lan.address(1) in event["addresses"]
    assert "127.0.0.1" not in event["addresses"]
    assert not any(addr.startswith("127.") for addr in event["addresses"])
    assert event["txt"] == {
        "v": "1",
        "id": box_id,
        "name": "Room 12",
        "api": "/api/",
        "ws": "/websocket/",
        "tls": "0",
    }
    # The one-shot command finds it too.
    [found] = one_shot.result()
    assert (found["name"], found["port"], found["txt"]["id"]) == ("Room 12", 8080, box_id)


@pytest.mark.netns
def test_goodbye_on_shutdown_then_new_port_after_restart(lan: Lan, spaces: Namespaces) -> None:
    a, b = lan.add("a"), lan.add("b")
    watcher = spaces.watch(b)
    first = spaces.box(a, port=8080, tag="room")
    added, _ = watcher.wait_for("box added", lambda e: e["event"] == "added")
    assert added["port"] == 8080
    first.stop()
    # Without goodbye packets the client would keep the PTR record for its TTL (75 min).
    watcher.wait_for("box removed", lambda e: e["event"] == "removed" and e["name"] == "Room 12")
    spaces.box(a, port=8081, tag="room")  # same data dir: same box id
    event, _ = watcher.wait_for("box on 8081", lambda e: e["event"] == "added")
    assert (event["name"], event["port"]) == ("Room 12", 8081)
    assert event["txt"]["id"] == added["txt"]["id"]


@pytest.mark.netns
def test_address_changes_are_reannounced(lan: Lan, spaces: Namespaces) -> None:
    a, b = lan.add("a"), lan.add("b")
    # The box starts before its network: link down, no address.
    ip("-n", a, "link", "set", "eth0", "down")
    ip("-n", a, "addr", "flush", "dev", "eth0")
    watcher = spaces.watch(b)
    spaces.box(a)
    # Wi-Fi back: the link comes up with an address after the box started.
    ip("-n", a, "addr", "add", lan.address(61) + "/24", "dev", "eth0")
    ip("-n", a, "link", "set", "eth0", "up")
    watcher.wait_for("box added", lambda e: lan.address(61) in e.get("addresses", []))
    # A DHCP renew that hands out a different address.
    ip("-n", a, "addr", "del", lan.address(61) + "/24", "dev", "eth0")
    ip("-n", a, "addr", "add", lan.address(51) + "/24", "dev", "eth0")
    # The client ends up with the new address only (the old one is flushed, not kept).
    watcher.wait_for(
        "new address only",
        lambda e: (
            lan.address(51) in e.get("addresses", [])
            and lan.address(61) not in e.get("addresses", [])
        ),
    )


@pytest.mark.netns
def test_same_name_boxes_get_distinct_names(lan: Lan, spaces: Namespaces) -> None:
    a, b, c = lan.add("a"), lan.add("b"), lan.add("c")
    watcher = spaces.watch(b)
    spaces.box(a, name="Room 12")
    watcher.wait_for("first box", lambda e: e["event"] == "added")
    spaces.box(c, name="Room 12")
    second, _ = watcher.wait_for(
        "second box", lambda e: e["event"] == "added" and e["name"] != "Room 12"
    )
    assert second["name"] == "Room 12-2"
    assert second["txt"]["name"] == "Room 12"  # the configured name stays in TXT
    assert lan.address(3) in second["addresses"]
    # The box shows the name it settled on.
    assert health(spaces, c, 8080)["box"]["name"] == "Room 12-2"  # type: ignore[index]
    assert health(spaces, a, 8080)["box"]["name"] == "Room 12"  # type: ignore[index]
    assert "<h1>Room 12-2</h1>" in fetch(spaces, c, 8080, "/index/")


@pytest.mark.netns
def test_loopback_only_stays_on_loopback(lan: Lan, spaces: Namespaces) -> None:
    a, b = lan.add("a"), lan.add("b")
    spaces.box(a, env={"VRLMS_MDNS_INTERFACES": "127.0.0.1"}).wait_advertised()
    with ThreadPoolExecutor(2) as pool:
        # Box and client share 127.0.0.1:5353 (SO_REUSEPORT): the kernel may hand a unicast
        # answer to the box's socket, so the client can need its second (multicast) query.
        on_loopback = pool.submit(
            spaces.discover, a, timeout_s=3.0, VRLMS_MDNS_INTERFACES="127.0.0.1"
        )
        on_lan = pool.submit(spaces.discover, b)
    # Seen on the box's own loopback, and never on the LAN.
    [found] = on_loopback.result()
    assert (found["name"], found["addresses"]) == ("Room 12", ["127.0.0.1"])
    assert on_lan.result() == []


@pytest.mark.netns
def test_independent_implementations_see_box(lan: Lan, spaces: Namespaces, tmp_path: Path) -> None:
    ok, reason = avahi_available()
    need(ok, reason)
    a, b = lan.add("a"), lan.add("b")
    avahi = Avahi(b, tmp_path / "avahi")
    try:
        avahi.start()
        spaces.box(a)
        box_id = health(spaces, a, 8080)["box"]["id"]  # type: ignore[index]
        # avahi (a different mDNS stack) browses and resolves it.
        [entry] = avahi.browse("_vrlms._tcp", timeout_s=WAIT_S)
        _, iface, family, name, service_type, domain, host, address, port, txt = entry
        assert (unescape(name), service_type, domain) == ("Room 12", "_vrlms._tcp", "local")
        assert (iface, family, address, port) == ("eth0", "IPv4", lan.address(1), "8080")
        assert host == f"vrlms-{box_id.replace('-', '')[:12]}.local"
        assert f'"id={box_id}"' in txt and '"v=1"' in txt and '"api=/api/"' in txt
    finally:
        avahi.stop()
    # A hand-built DNS-SD query (legacy unicast, RFC 6762 s6.7) gets a well-formed answer.
    done = spaces.run(b, [sys.executable, "-m", "tests.discovery.rawquery", lan.address(2)])
    assert done.returncode == 0, done.stderr
    [reply] = json.loads(done.stdout)
    service = "Room 12._vrlms._tcp.local."
    assert reply["from"] == lan.address(1)
    assert reply["instances"] == [service]
    assert reply["srv"][service]["port"] == 8080
    assert reply["txt"][service]["id"] == box_id
    assert reply["txt"][service]["v"] == "1"
    assert lan.address(1) in reply["a"]


def unescape(avahi_name: str) -> str:
    """avahi-browse -p writes bytes outside [A-Za-z0-9] as \\DDD (decimal)."""
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), avahi_name)


async def test_org_slug_advertised_only_for_a_single_org(box: RunningBox) -> None:
    db = box.app[DB]
    assert await single_org_slug(db) is None
    async with db.write() as s:
        s.add(Org(slug="north-school", name="North School"))
    assert await single_org_slug(db) == "north-school"
    async with db.write() as s:
        s.add(Org(slug="south-school", name="South School"))
    assert await single_org_slug(db) is None


async def test_no_advertising_on_an_ephemeral_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Host namespace, but nothing is sent: with port 0 the advertiser never opens a socket.
    running = await start_box(box_settings(tmp_path / "data", mdns=True, port=0))
    try:
        async with running.http.get("/api/health") as resp:
            assert (await resp.json())["box"]["name"] == "VR Classroom"
    finally:
        await stop_box(running)
    assert "not advertising, the box listens on an ephemeral port" in caplog.text
