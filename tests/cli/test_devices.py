"""`vrlms-edge devices ...` as a real subprocess: approve (registering), bind, block, list."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def test_approve_bind_block_list(school_dir: Path) -> None:
    added = run_cli(school_dir, "users", "add", "kid", "--role", "student", "--pin", "1001")
    assert added.returncode == 0, added.stderr
    approved = run_cli(school_dir, "devices", "approve", "HS-7", "HS-8")
    assert approved.returncode == 0, approved.stderr
    assert "registered HS-7" in approved.stderr and "approved HS-8" in approved.stderr
    bound = run_cli(school_dir, "devices", "bind", "HS-7", "kid")
    assert bound.returncode == 0 and "bound HS-7 to kid" in bound.stderr
    blocked = run_cli(school_dir, "devices", "block", "HS-8")
    assert blocked.returncode == 0, blocked.stderr

    listed = run_cli(school_dir, "devices", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    found = {d["device_id"]: d for d in json.loads(listed.stdout)["devices"]}
    assert found["HS-7"]["status"] == "approved"
    assert found["HS-7"]["bound_user"]["nickname"] == "kid"
    assert (found["HS-8"]["status"], found["HS-8"]["bound_user"]) == ("blocked", None)

    ghost = run_cli(school_dir, "devices", "bind", "HS-7", "ghost")
    assert ghost.returncode == 1 and ghost.stderr.strip() == "vrlms-edge: user 'ghost' not found"
    wrong = run_cli(school_dir, "devices", "list", "--status", "lost")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
