"""config.py: defaults < TOML < VRLMS_* environment < CLI flags; bad settings exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from vrlms_edge.config import ConfigError, Settings, load_settings


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    toml = tmp_path / "box.toml"
    toml.write_text('port = 8001\nbox_name = "From TOML"\nlog_level = "DEBUG"\nheartbeat_s = 3\n')
    assert load_settings(environ={}).port == Settings().port == 8080

    from_file = load_settings(config_file=toml, environ={})
    assert (from_file.port, from_file.box_name, from_file.heartbeat_s) == (8001, "From TOML", 3.0)

    env = {"VRLMS_PORT": "8002", "VRLMS_BOX_NAME": "From env", "VRLMS_MDNS": "off"}
    from_env = load_settings(config_file=toml, environ=env)
    assert (from_env.port, from_env.box_name, from_env.log_level) == (8002, "From env", "DEBUG")
    assert from_env.mdns is False

    from_cli = load_settings(config_file=toml, environ=env, cli={"port": 8003, "host": None})
    assert (from_cli.port, from_cli.box_name, from_cli.host) == (8003, "From env", "0.0.0.0")


def test_config_file_is_found_by_env_or_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "vrlms.toml").write_text("[vrlms]\nport = 9100\n")
    found = load_settings(cli={"data_dir": data_dir}, environ={})
    assert found.port == 9100
    via_env = load_settings(environ={"VRLMS_DATA_DIR": str(data_dir)})
    assert via_env.port == 9100 and via_env.data_dir == data_dir
    other = tmp_path / "other.toml"
    other.write_text("port = 9200\n")
    chosen = load_settings(cli={"data_dir": data_dir}, environ={"VRLMS_CONFIG": str(other)})
    assert chosen.port == 9200


def test_lists_and_words_from_the_environment(tmp_path: Path) -> None:
    env = {
        "VRLMS_MDNS_INTERFACES": "eth0, 192.168.1.5,,wlan0",
        "VRLMS_SQLITE_SYNCHRONOUS": "FULL",
        "VRLMS_UNRELATED_THING": "ignored",
    }
    s = load_settings(environ=env)
    assert s.mdns_interfaces == ["eth0", "192.168.1.5", "wlan0"]
    assert s.sqlite_synchronous == "FULL"
    assert s.sqlite_path == (Path("./var") / "vrlms.sqlite3").resolve()


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("", {"VRLMS_PORT": "eighty"}, "port"),
        ("", {"VRLMS_PORT": "70000"}, "port"),
        ("", {"VRLMS_SQLITE_SYNCHRONOUS": "OFF"}, "sqlite_synchronous"),
        ('log_level = "LOUD"\n', {}, "log_level"),
        ("heartbeat_s = 0\n", {}, "heartbeat_s"),
        ("lockout_max_s = 1\n", {}, "lockout_max_s"),
        ("colour = 'blue'\n", {}, "colour"),
        ("port = \n", {}, "box.toml"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], key: str
) -> None:
    config = tmp_path / "box.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as bad:
        load_settings(config_file=config, environ=env)
    assert key in str(bad.value)


def test_cli_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "box.toml"
    config.write_text("port = 8080\nbogus_key = 1\n")
    unknown = run_cli(tmp_path / "data", "--config", str(config), "migrate")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        f"vrlms-edge: config file {config}: unknown key 'bogus_key'"
    ]
    bad_port = run_cli(tmp_path / "data", "serve", "--port", "99999")
    assert bad_port.returncode == 2
    lines = bad_port.stderr.strip().splitlines()
    assert len(lines) == 1 and "port" in lines[0]
    assert not (tmp_path / "data").exists()  # nothing was started or created
