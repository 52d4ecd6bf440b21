"""Fixtures for the discovery tests: a LAN of network namespaces, boxes (`vrlms-edge serve`)
and watching clients (`vrlms-edge discover --watch --json`) running inside them."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.discovery.netns import Lan, mdns_env, netns_available, netns_exec, vrlms

# Every wait in these tests is bounded by this. Discovery itself takes well under a second
# (bench/discovery_time.py), but starting Python processes on a loaded 2-core machine can take
# several seconds each.
WAIT_S = 15.0


@pytest.fixture
def lan() -> Iterator[Lan]:
    ok, reason = netns_available()
    need(ok, reason)
    net = Lan()
    try:
        yield net
    finally:
        net.close()


@dataclass
class Box:
    """A `vrlms-edge serve` process in a namespace."""

    ns: str
    data_dir: Path
    port: int
    proc: subprocess.Popen[str]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=WAIT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def wait_advertised(self, timeout: float = WAIT_S) -> None:
        """Until the box logged that its service is registered (probing done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "mDNS: advertising" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise AssertionError(f"box did not advertise within {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Watcher:
    """`vrlms-edge discover --watch --json` in a namespace; its events arrive on a queue."""

    proc: subprocess.Popen[str]
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def wait_for(
        self, what: str, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S
    ) -> tuple[dict[str, Any], float]:
        """The first event (after those already consumed) that matches, and seconds waited."""
        start = time.monotonic()
        deadline = start + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                break
            self.seen.append(event)
            if match(event):
                return event, time.monotonic() - start
        raise AssertionError(f"no event {what} within {timeout}s; seen {self.seen}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT_S)


@dataclass
class Namespaces:
    """Starts processes in namespaces and stops them all at the end of the test."""

    tmp: Path
    boxes: list[Box] = field(default_factory=list)
    watchers: list[Watcher] = field(default_factory=list)

    def box(
        self,
        ns: str,
        name: str = "Room 12",
        port: int = 8080,
        tag: str = "",
        env: dict[str, str] | None = None,
    ) -> Box:
        data_dir = self.tmp / f"{ns}-{tag or len(self.boxes)}"
        log_path = data_dir.with_suffix(".log")
        data_dir.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            proc = subprocess.Popen(
                vrlms(ns, "--data-dir", str(data_dir), "serve", "--port", str(port)),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=mdns_env(VRLMS_BOX_NAME=name, **(env or {})),
            )
        box = Box(ns=ns, data_dir=data_dir, port=port, proc=proc, log_path=log_path)
        self.boxes.append(box)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), f"box did not start: {line!r} {box.log()}"
        return box

    def watch(self, ns: str, timeout_s: float = 60.0) -> Watcher:
        proc = subprocess.Popen(
            vrlms(ns, "discover", "--watch", "--json", "--timeout", str(timeout_s)),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=mdns_env(),
        )
        watcher = Watcher(proc=proc)
        self.watchers.append(watcher)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                watcher.events.put(json.loads(line))

        threading.Thread(target=pump, daemon=True).start()
        return watcher

    def discover(self, ns: str, timeout_s: float = 2.0, **env: str) -> list[dict[str, Any]]:
        """One `vrlms-edge discover --json` run in `ns`: the boxes it printed."""
        done = subprocess.run(
            vrlms(ns, "discover", "--json", "--timeout", str(timeout_s)),
            capture_output=True,
            text=True,
            env=mdns_env(**env),
            timeout=timeout_s + 2 * WAIT_S,
        )
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def run(self, ns: str, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            netns_exec(ns, argv),
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            env=mdns_env(**env),
        )

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        for box in self.boxes:
            box.stop()


@pytest.fixture
def spaces(lan: Lan, tmp_path: Path) -> Iterator[Namespaces]:
    running = Namespaces(tmp=tmp_path)
    try:
        yield running
    finally:
        running.close()
