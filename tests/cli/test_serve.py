"""`vrlms-edge serve` refuses what the box cannot run on, and listens as a classroom needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import ServeProcess, cli_env, need
from vrlms_edge.commands.serve import LISTEN_BACKLOG


def test_serve_refuses_a_postgresql_database(tmp_path: Path) -> None:
    """The box's live paths need SQLite; a PostgreSQL URL (the org server's) is a usage
    error at once, not a crash on the first teacher command."""
    env = cli_env(VRLMS_DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:9/none")
    done = subprocess.run(
        [sys.executable, "-m", "vrlms_edge", "--data-dir", str(tmp_path), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "SQLite" in done.stderr and "Traceback" not in done.stderr
    assert not os.listdir(tmp_path)  # nothing made


def test_serve_queues_a_reconnect_storm(serve_process: ServeProcess) -> None:
    """The listening socket's accept queue holds a whole school reconnecting at once (W5 of
    the benchmarks: aiohttp's default of 128 dropped SYNs, a 1 s retransmit per headset).
    For a listening socket, `ss` shows the backlog in the Send-Q column."""
    need(shutil.which("ss") is not None, "ss (iproute2) is needed to read the listen backlog")
    port = urlsplit(serve_process.url).port
    with open("/proc/sys/net/core/somaxconn") as f:
        expected = min(LISTEN_BACKLOG, int(f.read()))
    done = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10
    )
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    assert rows, done.stdout + done.stderr
    assert {int(row[2]) for row in rows} == {expected}
