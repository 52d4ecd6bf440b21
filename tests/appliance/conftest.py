"""Session fixtures for the appliance: the rootfs tarball is built once per test session and
reused by the nspawn boot and the disk image; the qemu boot of the image starts as soon as
the image exists and runs in the background while the container tests run.

Figures (build times, image size, boot-to-ready) go to test-artifacts/appliance-figures.txt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from tests.conftest import need

REPO: Final = Path(__file__).resolve().parents[2]
FIGURES: Final = REPO / "test-artifacts" / "appliance-figures.txt"
OVMF_CODE: Final = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS: Final = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# The admin password the test provisioning files set.
ADMIN_PASSWORD: Final = "correct-horse-battery"


def record(line: str) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    with FIGURES.open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")


def need_root_tools(*tools: str) -> None:
    need(os.geteuid() == 0, "appliance tests need root (mmdebstrap, nspawn, netns)")
    for tool in tools:
        need(shutil.which(tool) is not None, f"{tool} is not installed (see .ci/run)")


# Everything in the checkout that goes into the rootfs: the tarball is rebuilt when one of
# these changes, and reused from the cache otherwise (a build takes minutes).
ROOTFS_INPUTS: Final = (
    "image-build",
    "systemd",
    "vrlms_edge",
    "docs/provisioning.md",
    "pyproject.toml",
)
CACHED_ROOTFS_KEPT: Final = 4
# Another test session (another checkout) may be about to use a tarball it just found.
CACHED_ROOTFS_MIN_AGE_S: Final = 3600


def rootfs_key() -> str:
    digest = hashlib.sha256()
    for name in ROOTFS_INPUTS:
        top = REPO / name
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(REPO)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
            digest.update(oct(path.stat().st_mode & 0o111).encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def rootfs_tar() -> Path:
    """`image-build/build-rootfs.sh` of this checkout, cached by the hash of its inputs in
    $VRLMS_IMAGE_CACHE/rootfs (default ~/.cache/vrlms-image)."""
    need_root_tools("mmdebstrap", "tar")
    cache = Path(os.environ.get("VRLMS_IMAGE_CACHE", Path.home() / ".cache" / "vrlms-image"))
    cache = cache / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"vrlms-edge-rootfs-{rootfs_key()}.tar"
    if out.exists():
        record(f"rootfs from cache {out.name}")
        return out
    # Several test sessions may build the same key at once: each writes its own file.
    partial = out.with_name(f"{out.stem}.{os.getpid()}.partial.tar")
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "image-build" / "build-rootfs.sh"), str(partial)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.fail(f"build-rootfs.sh failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    partial.rename(out)
    record(
        f"rootfs build {time.monotonic() - started:.0f} s, "
        f"tarball {out.stat().st_size / 2**20:.0f} MiB"
    )
    finished = [p for p in cache.glob("vrlms-edge-rootfs-*.tar") if ".partial" not in p.name]
    for stale in sorted(finished, key=lambda p: p.stat().st_mtime)[:-CACHED_ROOTFS_KEPT]:
        if time.time() - stale.stat().st_mtime > CACHED_ROOTFS_MIN_AGE_S:
            stale.unlink(missing_ok=True)
    return out


QEMU_PROVISION: Final = f"""
box_name = "Qemu Room"
admin_password = "{ADMIN_PASSWORD}"
"""


@pytest.fixture(scope="session")
def disk_image(rootfs_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_root_tools("mkfs.fat", "mcopy", "mkfs.ext4", "sfdisk")
    work = tmp_path_factory.mktemp("image")
    provision = work / "vrlms-provision.toml"
    provision.write_text(QEMU_PROVISION)
    out = work / "vrlms-edge.img"
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "image-build" / "build-image.sh"), str(rootfs_tar), str(out), str(provision)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record(
        f"image build {time.monotonic() - started:.0f} s, image {out.stat().st_size / 2**20:.0f}"
        f" MiB (allocated {out.stat().st_blocks * 512 / 2**20:.0f} MiB)"
    )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class BootingVm:
    proc: subprocess.Popen[bytes]
    port: int
    serial: Path
    image: Path
    started: float
    monitor: Path
    ready_after_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def power_down(self, within_s: float) -> bool:
        """ACPI power button through the qemu monitor; True if the guest shut down in time
        (with -no-reboot, qemu exits when the guest powers off)."""
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.monitor))
            sock.sendall(b"system_powerdown\n")
            time.sleep(0.5)
        try:
            self.proc.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            return False
        return True


@pytest.fixture(scope="session")
def qemu_vm(disk_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootingVm]:
    """The image booting under qemu (TCG, OVMF, serial console to a file, user networking
    restricted to a host-forward on 127.0.0.1). Returns at once; tests wait for readiness."""
    need_root_tools("qemu-system-x86_64")
    need(OVMF_CODE.exists() and OVMF_VARS.exists(), "OVMF firmware (package ovmf)")
    work = tmp_path_factory.mktemp("qemu")
    vars_fd = work / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, vars_fd)
    serial = work / "serial.log"
    port = free_port()
    cmd = [
        "qemu-system-x86_64",
        "-machine",
        "q35",
        "-m",
        "1024",
        "-smp",
        "2",
        "-no-reboot",
        "-drive",
        f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,file={vars_fd}",
        "-drive",
        f"file={disk_image},format=raw,if=virtio",
        # restrict=on: the guest reaches nothing but this forward (no host network, no internet).
        "-nic",
        f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:8080",
        "-serial",
        f"file:{serial}",
        # The monitor lets a test power the guest down cleanly (ACPI), so the ESP it wrote is
        # consistent when the test reads it.
        "-monitor",
        f"unix:{work / 'monitor.sock'},server,nowait",
        "-display",
        "none",
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    vm = BootingVm(
        proc=proc,
        port=port,
        serial=serial,
        image=disk_image,
        started=time.monotonic(),
        monitor=work / "monitor.sock",
    )
    try:
        yield vm
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
