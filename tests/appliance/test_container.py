"""The rootfs booted with `systemd-nspawn -b`: the hardened service gets ready, answers over
TLS, the provisioning file is applied once, and a stuck event loop is restarted by systemd's
watchdog.

The container has its own network namespace (made here) with only loopback, and the box's
mDNS is limited to 127.0.0.1: nothing multicasts on this machine's interfaces. Requests go
into that namespace with `ip netns exec`; commands inside the container run by nsenter.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import ssl
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.appliance.conftest import ADMIN_PASSWORD, BootingVm, need_root_tools, record
from vrlms_edge.domain.passwords import verify_secret

pytestmark = [pytest.mark.image, pytest.mark.slow]

# Short, so that the watchdog test is quick; the shipped unit uses 30 s.
TEST_WATCHDOG_S: Final = 4
READY_TIMEOUT_S: Final = 240.0

PROVISION: Final = f"""
box_name = "Nspawn Room"
admin_password = "{ADMIN_PASSWORD}"
org_name = "Container School"
tls = true

[org_server]
url = "http://127.0.0.1:9"
enrollment_token = "tok-container-1"
"""

# Fetch /api/health over TLS inside the namespace; print the body and the certificate's hash.
HEALTH_PROBE: Final = """
import hashlib, json, socket, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    with socket.create_connection(("127.0.0.1", 8080), timeout=3) as raw:
        with ctx.wrap_socket(raw) as s:
            der = s.getpeercert(binary_form=True)
            s.sendall(b"GET /api/health HTTP/1.1\\r\\nHost: box\\r\\nConnection: close\\r\\n\\r\\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
except OSError as exc:
    print(json.dumps({"error": str(exc)})); sys.exit(0)
head, _, body = data.partition(b"\\r\\n\\r\\n")
print(json.dumps({"status_line": head.split(b"\\r\\n")[0].decode(),
                  "body": json.loads(body or b"null"), "fp": hashlib.sha256(der).hexdigest()}))
"""


@dataclass
class Container:
    root: Path
    netns: str
    proc: subprocess.Popen[bytes]
    log: Path

    def health(self) -> dict[str, Any]:
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", HEALTH_PROBE],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def init_pid(self) -> int:
        """The container's PID 1, as seen from here: the child of systemd-nspawn that is PID 1
        in its own PID namespace."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("PPid") == str(self.proc.pid) and fields["NSpid"].split()[-1] == "1":
                return int(entry.name)
        raise AssertionError("container init not found")

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.init_pid()), "-m", "-u", "-i", "-n", "-p", *cmd],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def show(self, unit: str, prop: str) -> str:
        done = self.run("systemctl", "show", "-p", prop, "--value", unit)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def journal(self, unit: str) -> str:
        done = self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit)
        return done.stdout

    def wait_ready(self, deadline: float) -> dict[str, Any]:
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("systemd-nspawn exited: " + self.log.read_text()[-3000:])
            last = self.health()
            if last.get("body", {}) and last["body"].get("status") == "ok":
                return last
            time.sleep(1)
        raise AssertionError(f"not ready: {last}\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def container(
    rootfs_tar: Path, qemu_vm: BootingVm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    # qemu_vm is requested only so that the (slow, TCG) VM boots while these tests run.
    need_root_tools("systemd-nspawn", "ip", "nsenter", "systemd-analyze")
    root = tmp_path_factory.mktemp("nspawn") / "root"
    root.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(rootfs_tar), "-C", str(root)], check=True)
    (root / "boot" / "efi").mkdir(parents=True, exist_ok=True)
    (root / "boot" / "efi" / "vrlms-provision.toml").write_text(PROVISION)
    dropin = root / "etc" / "systemd" / "system" / "vrlms-edge.service.d"
    dropin.mkdir(parents=True)
    # Only the environment and the watchdog period change; the sandbox is the shipped one.
    (dropin / "50-test.conf").write_text(
        "[Service]\n"
        "Environment=VRLMS_MDNS_INTERFACES=127.0.0.1 VRLMS_DEBUG_BLOCK_SIGNAL=on\n"
        f"WatchdogSec={TEST_WATCHDOG_S}s\n"
    )
    netns = f"vrlms-appliance-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    log = root.parent / "console.log"
    proc = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    *("systemd-nspawn", "-q", "-b", "--register=no", "--keep-unit"),
                    *("--console=read-only", "-D", str(root)),
                    f"--network-namespace-path=/run/netns/{netns}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        box = Container(root=root, netns=netns, proc=proc, log=log)
        started = time.monotonic()
        box.wait_ready(started + READY_TIMEOUT_S)
        record(f"nspawn boot to ready {time.monotonic() - started:.1f} s")
        yield box
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()  # nspawn powers the container off
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        subprocess.run(["ip", "netns", "delete", netns], check=False)


def _uid_of(root: Path, user: str) -> int:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2])
    raise AssertionError(f"no user {user}")


def test_the_service_is_ready_and_answers_over_tls(container: Container) -> None:
    probe = container.health()
    assert probe["status_line"].startswith("HTTP/1.1 200")
    assert probe["body"]["box"]["name"] == "Nspawn Room"
    assert probe["body"]["db"] == "ok"
    data = container.root / "var" / "lib" / "vrlms-edge"
    cert = (data / "tls-cert.pem").read_text()
    assert probe["fp"] == hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert)).hexdigest()
    # The data dir belongs to the service user; the TLS key to it alone.
    key = (data / "tls-key.pem").stat()
    assert stat.S_IMODE(key.st_mode) == 0o600
    assert key.st_uid == _uid_of(container.root, "vrlms-edge")
    assert container.show("vrlms-edge.service", "ActiveState") == "active"
    assert "listening on https://0.0.0.0:8080" in container.journal("vrlms-edge.service")


def test_the_provisioning_file_is_applied_once(container: Container) -> None:
    file = container.root / "boot" / "efi" / "vrlms-provision.toml"
    left = file.read_text()
    assert ADMIN_PASSWORD not in left and "tok-container-1" not in left
    applied = tomllib.loads(left)
    assert applied["applied_at"]
    db_path = container.root / "var" / "lib" / "vrlms-edge" / "vrlms.sqlite3"
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT role, password_hash FROM users").fetchall()
    finally:
        db.close()
    assert len(rows) == 1 and rows[0][0] == "admin"
    assert verify_secret(ADMIN_PASSWORD, rows[0][1])
    pending = container.root / "var" / "lib" / "vrlms-edge" / "pending-enrollment.toml"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600

    # Run the first-boot unit again, as the next boot would: nothing changes.
    again = container.run("systemctl", "restart", "vrlms-provision.service")
    assert again.returncode == 0, again.stderr
    assert "already applied" in container.journal("vrlms-provision.service")
    assert file.read_text() == left


def test_the_units_verify_inside_the_rootfs(container: Container) -> None:
    done = subprocess.run(
        [
            *("systemd-analyze", "verify", f"--root={container.root}"),
            "/usr/lib/systemd/system/vrlms-edge.service",
            "/usr/lib/systemd/system/vrlms-provision.service",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_stuck_event_loop_is_restarted_by_the_watchdog(container: Container) -> None:
    pid_before = container.show("vrlms-edge.service", "MainPID")
    restarts_before = int(container.show("vrlms-edge.service", "NRestarts"))
    blocked = container.run(
        "systemctl", "kill", "--kill-whom=main", "-s", "SIGUSR2", "vrlms-edge.service"
    )
    assert blocked.returncode == 0, blocked.stderr
    # While the loop is stuck the box does not answer.
    time.sleep(1)
    assert "error" in container.health()
    deadline = time.monotonic() + TEST_WATCHDOG_S * 4 + 60
    while time.monotonic() < deadline:
        if int(container.show("vrlms-edge.service", "NRestarts")) > restarts_before:
            break
        time.sleep(1)
    else:
        pytest.fail("systemd did not restart the stuck service")
    container.wait_ready(time.monotonic() + READY_TIMEOUT_S)
    assert container.show("vrlms-edge.service", "MainPID") != pid_before
    assert "Watchdog timeout" in container.journal("vrlms-edge.service")


# Registers a service with zeroconf on 127.0.0.1 and resolves it from a second instance: the
# same library, sockets (UDP multicast) and interface lookups (netlink) as the box's mDNS.
MDNS_CHECK: Final = """
import socket, sys
from zeroconf import ServiceInfo, Zeroconf
kind = "_vrlmscheck._tcp.local."
name = "Sandbox check." + kind
info = ServiceInfo(kind, name, addresses=[socket.inet_aton("127.0.0.1")], port=8080,
                   properties={"fp": "ab" * 32}, server="sandbox-check.local.")
advertiser = Zeroconf(interfaces=["127.0.0.1"])
advertiser.register_service(info)
browser = Zeroconf(interfaces=["127.0.0.1"])
found = browser.get_service_info(kind, name, timeout=10000)
print("mdns-check:", found.properties.get(b"fp").decode() if found else "not found", flush=True)
browser.close(); advertiser.unregister_service(info); advertiser.close()
sys.exit(0 if found else 1)
"""


def test_mdns_works_inside_the_service_sandbox(container: Container) -> None:
    """The shipped sandbox (every directive of vrlms-edge.service's [Service] section) around
    a zeroconf advertise + resolve, until the box's own mDNS runs in this image."""
    shipped = (container.root / "usr/lib/systemd/system/vrlms-edge.service").read_text()
    service = shipped.split("[Service]", 1)[1].split("[Install]", 1)[0]
    dropped = ("Type=", "NotifyAccess=", "ExecStart=", "WatchdogSec=", "Restart", "Timeout")
    sandbox = [line for line in service.splitlines() if not line.startswith(dropped)]
    (container.root / "opt/vrlms-edge/mdns_check.py").write_text(MDNS_CHECK)
    unit = "\n".join(
        [
            "[Service]",
            "Type=oneshot",
            "ExecStart=/opt/vrlms-edge/bin/python /opt/vrlms-edge/mdns_check.py",
            *sandbox,
        ]
    )
    (container.root / "etc/systemd/system/vrlms-mdns-check.service").write_text(unit)
    assert container.run("systemctl", "daemon-reload").returncode == 0
    done = container.run("systemctl", "start", "vrlms-mdns-check.service")
    log = container.journal("vrlms-mdns-check.service")
    assert done.returncode == 0, done.stderr + log
    assert f"mdns-check: {'ab' * 32}" in log
