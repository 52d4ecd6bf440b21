"""avahi-daemon + avahi-browse inside a namespace, as an independent mDNS implementation.

avahi-browse talks to avahi-daemon over the D-Bus system bus, so the namespace gets its own
dbus-daemon (socket in a temporary directory) and its own /run (a private tmpfs in a private
mount namespace) for avahi's pid file and socket: nothing touches the host's services."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.discovery.netns import netns_exec

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
"""


def avahi_available() -> tuple[bool, str]:
    for tool in ("avahi-daemon", "avahi-browse", "dbus-daemon", "unshare"):
        if shutil.which(tool) is None:
            return False, f"needs {tool} (apt-get install avahi-daemon avahi-utils dbus)"
    return True, ""


@dataclass
class Avahi:
    ns: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def bus(self) -> str:
        return f"unix:path={self.workdir / 'bus.sock'}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "bus.conf").write_text(BUS_CONF.format(socket=self.workdir / "bus.sock"))
        (self.workdir / "avahi.conf").write_text(AVAHI_CONF)
        log = (self.workdir / "daemons.log").open("ab")
        self.procs.append(
            subprocess.Popen(
                netns_exec(
                    self.ns,
                    ["dbus-daemon", "--nofork", "--config-file", str(self.workdir / "bus.conf")],
                ),
                stdout=log,
                stderr=log,
            )
        )
        # avahi-daemon exits at once when the bus is not there yet.
        deadline = time.monotonic() + 5.0
        while not (self.workdir / "bus.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.procs.append(
            subprocess.Popen(
                netns_exec(
                    self.ns,
                    [
                        "unshare",
                        "--mount",
                        "--propagation",
                        "private",
                        "sh",
                        "-c",
                        'mount -t tmpfs tmpfs /run && exec "$@"',
                        "avahi-daemon",
                        "avahi-daemon",
                        "--no-drop-root",
                        "--no-chroot",
                        "--no-rlimits",
                        "-f",
                        str(self.workdir / "avahi.conf"),
                    ],
                ),
                stdout=log,
                stderr=log,
                env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus, "PATH": "/usr/sbin:/usr/bin:/bin"},
            )
        )

    def browse(self, service_type: str, timeout_s: float) -> list[list[str]]:
        """Resolved entries of `avahi-browse -rpt` ("=" lines split on ";"), retried until
        something resolves or the time is up (the daemon needs a moment to come up)."""
        deadline = time.monotonic() + timeout_s
        output = ""
        while time.monotonic() < deadline:
            done = subprocess.run(
                netns_exec(self.ns, ["avahi-browse", "-r", "-p", "-t", service_type]),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus, "PATH": "/usr/sbin:/usr/bin:/bin"},
            )
            output = done.stdout + done.stderr
            resolved = [line.split(";") for line in done.stdout.splitlines() if line[:1] == "="]
            if resolved:
                return resolved
            time.sleep(0.3)
        log = (self.workdir / "daemons.log").read_text(errors="replace")[-2000:]
        raise AssertionError(f"avahi-browse resolved nothing: {output!r}; daemons: {log}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
