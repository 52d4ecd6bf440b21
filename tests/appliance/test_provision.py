"""`vrlms-edge provision FILE`: applied once, secrets removed, admin can log in afterwards."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import cli_env
from vrlms_edge.appliance.provision import ProvisionError, parse_spec
from vrlms_edge.domain.passwords import verify_secret

PROVISION = """
box_name = "Room 12"
admin_password = "correct-horse-battery"
org_name = "Hill School"
tls = true

[org_server]
url = "http://127.0.0.1:9"
enrollment_token = "tok-123456"

[network]
address = "192.168.10.5/24"
gateway = "192.168.10.1"
dns = ["192.168.10.1", "9.9.9.9"]
"""


def _provision(tmp_path: Path, file: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "etc" / "vrlms.toml"
    config.parent.mkdir(exist_ok=True)
    if not config.exists():
        config.write_text("port = 8080\n")
    args = ["--data-dir", str(tmp_path / "data"), "--config", str(config), "provision"]
    args += [str(file), "--network-dir", str(tmp_path / "network")]
    return subprocess.run(
        [sys.executable, "-m", "vrlms_edge", *args],
        env=cli_env(),
        # As under vrlms-provision.service (UMask=0077): the settings file must stay readable.
        preexec_fn=lambda: os.umask(0o077),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_provisioning_is_applied_once_and_secrets_are_removed(tmp_path: Path) -> None:
    file = tmp_path / "vrlms-provision.toml"
    file.write_text(PROVISION)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "vrlms.toml").write_text('port = 8080\nsqlite_synchronous = "FULL"\n')
    done = _provision(tmp_path, file)
    assert done.returncode == 0, done.stderr
    assert "admin 'admin' created in org 'hill-school'" in done.stdout

    config_file = tmp_path / "etc" / "vrlms.toml"
    # The service (another user) reads it.
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o644
    config = tomllib.loads(config_file.read_text())
    assert config == {
        "port": 8080,
        "sqlite_synchronous": "FULL",
        "box_name": "Room 12",
        "tls": True,
    }
    network = (tmp_path / "network" / "10-vrlms-static.network").read_text()
    assert "Address=192.168.10.5/24" in network and "Gateway=192.168.10.1" in network
    assert "DNS=9.9.9.9" in network

    db = sqlite3.connect(tmp_path / "data" / "vrlms.sqlite3")
    role, password_hash = db.execute(
        "SELECT role, password_hash FROM users WHERE nickname = 'admin'"
    ).fetchone()
    assert role == "admin"
    assert verify_secret("correct-horse-battery", password_hash)
    assert db.execute("SELECT name FROM box_identity").fetchone() == ("Room 12",)
    db.close()

    # The org server is unreachable (nothing listens on port 9): kept for later, owner only.
    pending = tmp_path / "data" / "pending-enrollment.toml"
    assert tomllib.loads(pending.read_text()) == {
        "url": "http://127.0.0.1:9",
        "token": "tok-123456",
    }
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600

    left = file.read_text()
    assert "correct-horse-battery" not in left and "tok-123456" not in left
    after = tomllib.loads(left)
    assert after["applied_at"].endswith("Z")
    assert after["box_name"] == "Room 12"
    assert after["network"]["address"] == "192.168.10.5/24"

    # A second boot changes nothing.
    again = _provision(tmp_path, file)
    assert again.returncode == 0, again.stderr
    assert "already applied" in again.stdout
    assert file.read_text() == left


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('admin_password = "short"', "admin_password"),
        ('box_name = "x"\nunknown_key = 1', "unknown_key"),
        ('[network]\naddress = "192.168.1.300/24"', "network"),
        ('[network]\naddress = "192.168.1.3"', "network.address"),
        ('[org_server]\nurl = "ftp://x"', "org_server.url"),
        ("box_name = ", "TOML"),
    ],
)
def test_a_bad_file_names_the_key_and_changes_nothing(text: str, key: str) -> None:
    with pytest.raises(ProvisionError, match=key.replace(".", r"\.")):
        parse_spec(text)


def test_the_cli_refuses_a_bad_file_with_exit_2(tmp_path: Path) -> None:
    file = tmp_path / "vrlms-provision.toml"
    file.write_text('admin_password = "short"\n')
    done = _provision(tmp_path, file)
    assert done.returncode == 2
    assert "admin_password" in done.stderr
    assert file.read_text() == 'admin_password = "short"\n'
    assert not (tmp_path / "data" / "vrlms.sqlite3").exists()
