"""The data directory's in-use lock: `serve` holds it while it runs, `restore` needs it free.

An flock on `<data_dir>/serve.lock` (the file keeps the holder's pid for the message). The
kernel drops the lock when the process dies, so a crashed box never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

LOCK_NAME: Final = "serve.lock"


class DataDirInUse(Exception):
    def __init__(self, data_dir: Path, holder: str) -> None:
        super().__init__(f"{data_dir} is in use by a running vrlms-edge ({holder}): stop it first")


@contextmanager
def hold(data_dir: Path, what: str) -> Iterator[None]:
    """Hold the lock for the block; DataDirInUse at once if someone else holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown pid"
            raise DataDirInUse(data_dir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what}, pid {os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
