"""`vrlms-edge users ...` as a real subprocess: add, list, set-pin, set-password, disable.

The rules themselves are tested in tests/domain/test_roster.py; here: arguments, secrets
from stdin, exit codes, one-line errors, nothing secret in the output.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import run_cli
from vrlms_edge.domain.passwords import verify_secret

SECRET = "correct-horse-battery"


def _user(data_dir: Path, nickname: str) -> tuple[str | None, str | None, int]:
    with sqlite3.connect(data_dir / "vrlms.sqlite3") as conn:
        row = conn.execute(
            "SELECT pin_hash, password_hash, disabled FROM users WHERE nickname=?", (nickname,)
        ).fetchone()
    assert row is not None, nickname
    return row[0], row[1], row[2]


def test_add_list_set_pin_and_disable(school_dir: Path) -> None:
    added = run_cli(
        school_dir,
        *("users", "add", "ms.green", "--role", "teacher", "--name", "Ms Green"),
        *("--pin", "4321", "--password-stdin"),
        stdin=SECRET + "\n",
    )
    assert added.returncode == 0, added.stderr
    assert "added teacher ms.green" in added.stderr
    assert SECRET not in added.stdout + added.stderr
    pin_hash, password_hash, _ = _user(school_dir, "ms.green")
    assert verify_secret("4321", pin_hash) and verify_secret(SECRET, password_hash)

    kid = run_cli(
        school_dir, "users", "add", "kid", "--role", "student", "--pin-stdin", stdin="1001\n"
    )
    assert kid.returncode == 0, kid.stderr
    assert verify_secret("1001", _user(school_dir, "kid")[0])

    listed = run_cli(school_dir, "users", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    users = {u["nickname"]: u for u in json.loads(listed.stdout)["users"]}
    assert sorted(users) == ["kid", "ms.green"]
    assert users["ms.green"]["role"] == "teacher" and users["ms.green"]["has_password"]
    assert (users["kid"]["role"], users["kid"]["display_name"]) == ("student", "kid")

    assert run_cli(school_dir, "users", "set-pin", "kid", "2002").returncode == 0
    assert verify_secret("2002", _user(school_dir, "kid")[0])
    disabled = run_cli(school_dir, "users", "disable", "kid")
    assert disabled.returncode == 0, disabled.stderr
    assert _user(school_dir, "kid")[2] == 1


def test_refusals_are_one_line_and_usage_errors_exit_2(school_dir: Path) -> None:
    assert (
        run_cli(school_dir, "users", "add", "kid", "--role", "student", "--pin", "1001").returncode
        == 0
    )
    taken = run_cli(school_dir, "users", "add", "kid", "--role", "student", "--pin", "1002")
    assert taken.returncode == 1
    assert taken.stderr.strip().splitlines() == [
        "vrlms-edge: nickname 'kid' is already taken in this org"
    ]
    # An admin needs a password; with no terminal to ask on, that is a usage error.
    admin = run_cli(school_dir, "users", "add", "boss", "--role", "admin")
    assert admin.returncode == 2 and "--password-stdin" in admin.stderr
    short = run_cli(
        school_dir, "users", "set-password", "kid", "--password-stdin", stdin="a-long-password\n"
    )
    assert short.returncode == 1
    assert "students log in with a PIN" in short.stderr
    assert "a-long-password" not in short.stderr
    no_role = run_cli(school_dir, "users", "add", "someone")
    assert no_role.returncode == 2 and "--role" in no_role.stderr


def test_first_user_on_an_empty_box_brings_the_org(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    short = run_cli(
        data_dir, "users", "add", "boss", "--role", "admin", "--password-stdin", stdin="short\n"
    )
    assert short.returncode == 1
    with sqlite3.connect(data_dir / "vrlms.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM orgs").fetchone()[0] == 0
    added = run_cli(
        data_dir,
        *("users", "add", "boss", "--role", "admin", "--org", "hillside"),
        *("--org-name", "Hillside School", "--password-stdin"),
        stdin="long-enough-secret\n",
    )
    assert added.returncode == 0, added.stderr
    with sqlite3.connect(data_dir / "vrlms.sqlite3") as conn:
        assert conn.execute("SELECT slug, name FROM orgs").fetchall() == [
            ("hillside", "Hillside School")
        ]
