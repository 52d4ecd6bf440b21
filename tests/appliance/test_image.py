"""The UEFI disk image under qemu (TCG, OVMF): it boots, the service gets ready (health check
through a host-forward on 127.0.0.1), and the provisioning file on the ESP was applied and
scrubbed. The VM started booting in the session fixture, while the container tests ran."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import tomllib
import urllib.request
from typing import Final

import pytest

from tests.appliance.conftest import ADMIN_PASSWORD, BootingVm, record
from tests.conftest import need

pytestmark = [pytest.mark.image, pytest.mark.slow]

# TCG on a 2-core machine: firmware, kernel, initramfs, provisioning and the first start
# (schema creation): 169 s measured under light load (without provisioning), 597 s with eight
# test suites running at once. The ceiling leaves room for that.
VM_READY_TIMEOUT_S: Final = 900.0
ESP_OFFSET: Final = 1024 * 1024


def _health(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as resp:
            body: dict[str, object] = json.loads(resp.read())
            return body
    except OSError:
        return None


def test_the_disk_image_boots_to_the_ready_service(qemu_vm: BootingVm) -> None:
    deadline = qemu_vm.started + VM_READY_TIMEOUT_S
    body = None
    while time.monotonic() < deadline:
        assert qemu_vm.proc.poll() is None, qemu_vm.serial.read_text(errors="replace")[-3000:]
        body = _health(qemu_vm.port)
        if body is not None:
            break
        time.sleep(2)
    serial = qemu_vm.serial.read_text(errors="replace")
    assert body is not None, f"not ready in {VM_READY_TIMEOUT_S} s; serial:\n{serial[-4000:]}"
    qemu_vm.ready_after_s = time.monotonic() - qemu_vm.started
    record(f"qemu TCG (2 vCPUs) power-on to ready {qemu_vm.ready_after_s:.0f} s")
    assert body["status"] == "ok"
    assert body["box"] == {"id": body["box"]["id"], "name": "Qemu Room"}  # type: ignore[index]
    # systemd reports on the serial console (the image boots headless).
    assert "vrlms-edge" in serial


def test_the_esp_provisioning_file_was_scrubbed(qemu_vm: BootingVm) -> None:
    need(shutil.which("mtype") is not None, "mtools")
    if qemu_vm.ready_after_s is None:
        pytest.fail("the VM did not get ready (see the test before)")
    # A clean shutdown: the guest's vfat writes are on the disk image before mtools reads it.
    if not qemu_vm.power_down(within_s=180):
        qemu_vm.proc.terminate()
        qemu_vm.proc.wait(timeout=30)
        pytest.fail("the guest did not power off on the ACPI power button within 180 s")
    done = subprocess.run(
        ["mtype", "-i", f"{qemu_vm.image}@@{ESP_OFFSET}", "::/vrlms-provision.toml"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert ADMIN_PASSWORD not in done.stdout
    left = tomllib.loads(done.stdout)
    assert left["applied_at"] and left["box_name"] == "Qemu Room"
