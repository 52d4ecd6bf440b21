"""`vrlms-edge serve` refuses what the box cannot run on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import cli_env


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
