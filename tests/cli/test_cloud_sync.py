"""The command line IT scripts against: `cloud orgs add`, `cloud admins add`,
`cloud enrollment-token`, then on a box `enroll URL TOKEN`, `sync now` and `sync status`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env
from tests.orgserver import spawn_cloud

pytestmark = pytest.mark.postgres


def _cli(data: Path, *args: str, db: str | None = None, stdin: str | None = None) -> str:
    env = cli_env(VRLMS_LOG_LEVEL="WARNING", **({"VRLMS_DATABASE_URL": db} if db else {}))
    done = subprocess.run(
        [sys.executable, "-m", "vrlms_edge", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_org_server_and_box_commands(pg_url: str, tmp_path: Path) -> None:
    cloud_dir, box_dir = tmp_path / "cloud", tmp_path / "box"
    org_id = _cli(cloud_dir, "cloud", "orgs", "add", "river", "River School", db=pg_url)
    _cli(
        cloud_dir,
        "cloud", "admins", "add", "river", "it", "--password-stdin",
        db=pg_url,
        stdin="a long enough password\n",
    )  # fmt: skip
    token = _cli(cloud_dir, "cloud", "enrollment-token", "river", db=pg_url)
    assert token.startswith("vbe_")
    cloud = spawn_cloud(pg_url, cloud_dir)
    try:
        assert "in org river" in _cli(box_dir, "enroll", cloud.url, token)
        again = subprocess.run(
            [sys.executable, "-m", "vrlms_edge", "--data-dir", str(box_dir), "enroll", cloud.url,
             token],
            capture_output=True, text=True, env=cli_env(), timeout=60,
        )  # fmt: skip
        assert again.returncode == 1 and "already used" in again.stderr
        moved = _cli(box_dir, "sync", "now")
        assert "pulled 2" in moved and "users 1" in moved and "0 left in outbox" in moved
        assert "event summaries: 0 new or changed" in moved
        status = json.loads(_cli(box_dir, "sync", "status"))
        assert status["enrolled"] and status["org_id"] == org_id
        assert status["stage"] == "done" and status["last_error"] is None
    finally:
        cloud.proc.terminate()
        cloud.proc.wait(timeout=10)
        if cloud.proc.stdout is not None:
            cloud.proc.stdout.close()
