"""sd_notify over a real AF_UNIX datagram socket, and the watchdog fed by a running box."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env
from vrlms_edge.systemd import notify, notify_address, watchdog_interval_s


def _receiver(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    return sock


def test_notify_is_a_noop_without_systemd() -> None:
    assert notify_address({}) is None
    assert notify("READY=1", environ={}) is False
    assert notify("READY=1", environ={"NOTIFY_SOCKET": "relative/path"}) is False


def test_notify_sends_one_datagram_to_a_path(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _receiver(path) as sock:
        assert notify("READY=1", "STATUS=hi", environ={"NOTIFY_SOCKET": path})
        assert sock.recv(4096) == b"READY=1\nSTATUS=hi"


def test_notify_supports_the_abstract_namespace() -> None:
    name = f"vrlms-test-{os.getpid()}-{time.monotonic_ns()}"
    with _receiver("\0" + name) as sock:
        assert notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_to_a_missing_socket_reports_failure(tmp_path: Path) -> None:
    assert notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_interval_is_half_the_period() -> None:
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000"}) == 10.0
    # Another process is the one watched.
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None


def test_serve_notifies_ready_then_feeds_watchdog_then_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _receiver(path) as sock:
        env = cli_env(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vrlms_edge",
                "--data-dir",
                str(tmp_path / "d"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(m.startswith(b"READY=1") for m in got):
                got.append(sock.recv(4096))
            ready = got[-1]
            assert ready.startswith(b"READY=1"), got
            # While starting, the start timeout was extended.
            assert got[0] == b"EXTEND_TIMEOUT_USEC=30000000", got
            assert b"STATUS=listening on http://127.0.0.1:" in ready
            # The loop keeps feeding the watchdog after start-up.
            assert [sock.recv(4096) for _ in range(3)] == [b"WATCHDOG=1"] * 3
            proc.terminate()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = sock.recv(4096)
                if msg.startswith(b"STOPPING=1"):
                    break
            else:
                pytest.fail("no STOPPING=1")
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
