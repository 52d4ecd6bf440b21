"""Settings: one typed object built from defaults < TOML file < VRLMS_* environment < CLI flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, get_type_hints

import msgspec

ENV_PREFIX: Final = "VRLMS_"
CONFIG_FILE_NAME: Final = "vrlms.toml"


class ConfigError(Exception):
    """A setting has a bad value; the message names the key."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    data_dir: Path = Path("./var")
    host: str = "0.0.0.0"
    port: int = 8080
    # Empty means "SQLite file in data_dir" (see database_url_resolved).
    database_url: str = ""
    box_name: str = "VR Classroom"
    mdns: bool = True
    # Comma list of IP addresses or interface names; empty = all non-loopback interfaces.
    mdns_interfaces: list[str] = []
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Bearer tokens handed to headsets and API clients, and the dashboard's cookie session.
    token_ttl_s: int = 12 * 3600
    web_session_ttl_s: int = 8 * 3600
    # Account lockout: after `lockout_threshold` failures the account waits lockout_base_s,
    # doubling per further failure up to lockout_max_s.
    lockout_threshold: int = 5
    lockout_base_s: int = 30
    lockout_max_s: int = 15 * 60
    # Per client address: failures only (a classroom behind one NAT logs in at once).
    address_failure_limit: int = 30
    address_window_s: int = 300
    # An account's failure count is forgotten after this long without a failure.
    lockout_reset_s: int = 24 * 3600
    # Scheduled sessions with auto_start: how often the box looks for due ones, and how long
    # after its start time a session without an end time may still be started (restart case).
    schedule_poll_s: float = 1.0
    auto_start_grace_s: int = 15 * 60
    heartbeat_s: float = 10.0
    # Synchronized start: lead = clamp(3 x p95 RTT of the room, floor, cap).
    start_lead_floor_ms: int = 250
    start_lead_max_ms: int = 5000
    # A WebSocket whose writer is stuck on one send (or whose queue overflowed) this long is
    # closed with 4408: it cannot drain and must not hold memory or delay anyone.
    ws_send_stall_s: float = 5.0
    max_body_bytes: int = 1024 * 1024
    event_retention_days: int = 90
    tls: bool = False
    sync_interval_s: float = 30.0
    # Offline: retry after sync_retry_base_s, doubling per failure up to sync_backoff_max_s,
    # each wait jittered down to half so a school's boxes do not retry in step.
    sync_retry_base_s: float = 5.0
    sync_backoff_max_s: float = 300.0
    # Rows per pull/push page (one transaction each side).
    sync_page_size: int = 200
    # The background sync worker on an enrolled box (off: only `vrlms-edge sync now`).
    sync_worker: bool = True
    org_server_ca_bundle: str = ""
    # Debug only: SIGUSR2 freezes the event loop (to test that the systemd watchdog restarts it).
    debug_block_signal: bool = False

    @property
    def database_url_resolved(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'vrlms.sqlite3').resolve()}"

    @property
    def sqlite_path(self) -> Path | None:
        url = self.database_url_resolved
        if not url.startswith("sqlite"):
            return None
        return Path(url.split(":///", 1)[1])


_FIELDS: Final = frozenset(Settings.__struct_fields__)
_LIST_FIELDS: Final = frozenset({"mdns_interfaces"})
# on/off/yes/no are accepted for every boolean setting (msgspec itself takes true/false/1/0).
_BOOL_FIELDS: Final = frozenset(
    name for name, kind in get_type_hints(Settings).items() if kind is bool
)
_BOOL_WORDS: Final = {"on": True, "off": False, "yes": True, "no": False}


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _FIELDS:
            continue
        value: Any = raw
        if key in _LIST_FIELDS:
            value = [part.strip() for part in raw.split(",") if part.strip()]
        elif raw.lower() in _BOOL_WORDS and key in _BOOL_FIELDS:
            value = _BOOL_WORDS[raw.lower()]
        values[key] = value
    return values


def _file_values(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    # Accept both a flat file and a [vrlms] table.
    table = raw.get("vrlms", raw)
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {unknown[0]!r}")
    if isinstance(table.get("mdns_interfaces"), str):
        table["mdns_interfaces"] = [p.strip() for p in table["mdns_interfaces"].split(",") if p]
    return dict(table)


def _decode_path(kind: type, value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


def _convert(values: dict[str, Any]) -> Settings:
    try:
        settings = msgspec.convert(values, Settings, strict=False, dec_hook=_decode_path)
    except msgspec.ValidationError as exc:
        # msgspec says e.g. "Expected `int`, got `str` - at `$.port`": lead with the key.
        text = str(exc)
        key = text.rsplit("$.", 1)[-1].rstrip("`").split("[")[0] if "$." in text else "?"
        raise ConfigError(f"invalid setting {key}: {text.split(' - at ')[0]}") from exc
    _check_ranges(settings)
    return settings


def _check_ranges(s: Settings) -> None:
    checks: list[tuple[str, bool]] = [
        ("port", 0 <= s.port <= 65535),
        ("token_ttl_s", s.token_ttl_s > 0),
        ("web_session_ttl_s", s.web_session_ttl_s > 0),
        ("lockout_threshold", s.lockout_threshold >= 1),
        ("lockout_base_s", s.lockout_base_s >= 1),
        ("lockout_max_s", s.lockout_max_s >= s.lockout_base_s),
        ("address_failure_limit", s.address_failure_limit >= 1),
        ("address_window_s", s.address_window_s >= 1),
        ("lockout_reset_s", s.lockout_reset_s >= 1),
        ("schedule_poll_s", 0.01 <= s.schedule_poll_s <= 3600),
        ("auto_start_grace_s", s.auto_start_grace_s >= 0),
        ("heartbeat_s", 0.05 <= s.heartbeat_s <= 600),
        ("start_lead_floor_ms", 0 <= s.start_lead_floor_ms <= s.start_lead_max_ms),
        ("ws_send_stall_s", 0.1 <= s.ws_send_stall_s <= 600),
        ("max_body_bytes", s.max_body_bytes >= 1024),
        ("event_retention_days", s.event_retention_days >= 1),
        ("box_name", 0 < len(s.box_name.encode()) <= 63),
        ("sync_interval_s", s.sync_interval_s > 0),
        ("sync_retry_base_s", s.sync_retry_base_s > 0),
        ("sync_backoff_max_s", s.sync_backoff_max_s >= s.sync_retry_base_s),
        ("sync_page_size", 1 <= s.sync_page_size <= 500),
    ]
    for key, ok in checks:
        if not ok:
            raise ConfigError(f"invalid setting {key}: {getattr(s, key)!r} is out of range")


def load_settings(
    *,
    config_file: Path | None = None,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the layers. The config file is `config_file`, else $VRLMS_CONFIG, else
    `<data_dir>/vrlms.toml` when it exists (data_dir as known from env/CLI/defaults)."""
    environ = os.environ if environ is None else environ
    cli_values = {k: v for k, v in (cli or {}).items() if v is not None}
    env_values = _env_values(environ)
    path = config_file or (Path(environ["VRLMS_CONFIG"]) if environ.get("VRLMS_CONFIG") else None)
    if path is None:
        data_dir = Path(
            cli_values.get("data_dir") or env_values.get("data_dir") or Settings().data_dir
        )
        candidate = data_dir / CONFIG_FILE_NAME
        path = candidate if candidate.exists() else None
    file_values = _file_values(path) if path is not None else {}
    merged: dict[str, Any] = {**file_values, **env_values, **cli_values}
    if "data_dir" in merged:
        merged["data_dir"] = str(merged["data_dir"])
    return _convert(merged)
