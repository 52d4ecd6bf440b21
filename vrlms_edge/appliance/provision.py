"""Apply a provisioning file (box name, admin, org server, static network) once.

School IT writes `vrlms-provision.toml` onto the image's EFI partition; on boot
`vrlms-edge provision FILE` applies it, then rewrites the file without its secrets and with
`applied_at`, so it is never applied twice and no password stays on the FAT partition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import os
import pwd
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
from sqlalchemy import select

from vrlms_edge.config import Settings
from vrlms_edge.domain.box import ensure_box_identity
from vrlms_edge.domain.passwords import MIN_PASSWORD_LENGTH, hash_secret
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Org, Role, User

log = logging.getLogger(__name__)

STATIC_NETWORK_FILE: Final = "10-vrlms-static.network"
PENDING_ENROLLMENT_FILE: Final = "pending-enrollment.toml"
# Keys whose values are secrets: blanked in the file once applied.
SECRET_KEYS: Final = frozenset({"admin_password", "enrollment_token"})


class ProvisionError(Exception):
    """The provisioning file is invalid; the message names the key."""


class NetworkSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Address with prefix, e.g. "192.168.10.5/24".
    address: str
    gateway: str = ""
    dns: list[str] = []
    # systemd.network Name= match; the default takes the wired interface(s).
    interface: str = "en* eth*"


class OrgServerSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str
    enrollment_token: str = ""


class ProvisionSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    box_name: str = ""
    admin_nickname: str = "admin"
    admin_password: str = ""
    # The org the admin belongs to when the box has none yet (an enrolled box gets its org
    # from the org server).
    org_name: str = "School"
    tls: bool | None = None
    org_server: OrgServerSpec | None = None
    network: NetworkSpec | None = None
    applied_at: str = ""


@dataclass
class ProvisionResult:
    applied: bool
    steps: list[str] = field(default_factory=list)


def parse_spec(text: str) -> ProvisionSpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(f"not valid TOML: {exc}") from exc
    try:
        spec = msgspec.convert(raw, ProvisionSpec)
    except msgspec.ValidationError as exc:
        raise ProvisionError(str(exc)) from exc
    _validate(spec)
    return spec


def _validate(spec: ProvisionSpec) -> None:
    if spec.box_name and not 0 < len(spec.box_name.encode()) <= 63:
        raise ProvisionError("box_name: 1 to 63 bytes")
    if spec.admin_password and len(spec.admin_password) < MIN_PASSWORD_LENGTH:
        raise ProvisionError(f"admin_password: at least {MIN_PASSWORD_LENGTH} characters")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", spec.admin_nickname):
        raise ProvisionError("admin_nickname: letters, digits, _ . - (1 to 64)")
    if spec.org_server and not spec.org_server.url.startswith(("https://", "http://")):
        raise ProvisionError("org_server.url: must start with https://")
    if spec.network:
        try:
            ipaddress.ip_interface(spec.network.address)
            for addr in [spec.network.gateway, *spec.network.dns]:
                if addr:
                    ipaddress.ip_address(addr)
        except ValueError as exc:
            raise ProvisionError(f"network: {exc}") from exc
        if "/" not in spec.network.address:
            raise ProvisionError("network.address: give a prefix, e.g. 192.168.10.5/24")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(str(value))


def to_toml(values: dict[str, Any], header: str = "") -> str:
    """Flat keys first, then one level of tables (all that our files use)."""
    lines = [f"# {line}" for line in header.splitlines()]
    tables = {k: v for k, v in values.items() if isinstance(v, dict)}
    for key, value in values.items():
        if key not in tables and value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    # The mode must not depend on the caller's umask (the provisioning unit runs with 0077).
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    # The rename must reach the disk too (the box may lose power right after first boot).
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def update_config(config_file: Path, spec: ProvisionSpec) -> None:
    values: dict[str, Any] = {}
    if config_file.exists():
        values = tomllib.loads(config_file.read_text())
    if spec.box_name:
        values["box_name"] = spec.box_name
    if spec.tls is not None:
        values["tls"] = spec.tls
    config_file.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(config_file, to_toml(values, "vrlms-edge settings (updated by provisioning)"))


def network_unit(net: NetworkSpec) -> str:
    lines = ["# Written by vrlms-edge provisioning.", "[Match]", f"Name={net.interface}", ""]
    lines += ["[Network]", f"Address={net.address}"]
    if net.gateway:
        lines.append(f"Gateway={net.gateway}")
    lines += [f"DNS={d}" for d in net.dns]
    return "\n".join(lines) + "\n"


async def ensure_admin(db: Database, spec: ProvisionSpec) -> str:
    """Create the admin (or set its password); returns what was done."""
    password_hash = await asyncio.to_thread(hash_secret, spec.admin_password)
    async with db.write() as s:
        org = (await s.execute(select(Org).order_by(Org.created_at).limit(1))).scalar_one_or_none()
        if org is None:
            slug = re.sub(r"[^a-z0-9]+", "-", spec.org_name.lower()).strip("-") or "school"
            org = Org(slug=slug[:64], name=spec.org_name)
            s.add(org)
            await s.flush()
        user = (
            await s.execute(
                select(User).where(User.org_id == org.id, User.nickname == spec.admin_nickname)
            )
        ).scalar_one_or_none()
        if user is None:
            s.add(
                User(
                    org_id=org.id,
                    role=Role.admin,
                    nickname=spec.admin_nickname,
                    display_name="Administrator",
                    password_hash=password_hash,
                )
            )
            return f"admin {spec.admin_nickname!r} created in org {org.slug!r}"
        user.password_hash = password_hash
        user.role = Role.admin
        user.disabled = False
        return f"admin {spec.admin_nickname!r} password set"


async def _apply_database(settings: Settings, spec: ProvisionSpec) -> list[str]:
    steps = []
    await asyncio.to_thread(migrate.upgrade, settings.database_url_resolved, settings.sqlite_path)
    db = Database(settings.database_url_resolved, sqlite_synchronous="FULL")
    try:
        await ensure_box_identity(db, settings.box_name)
        if spec.admin_password:
            steps.append(await ensure_admin(db, spec))
    finally:
        await db.dispose()
    return steps


def chown_tree(root: Path, owner: str) -> None:
    entry = pwd.getpwnam(owner)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)


def scrubbed(spec: ProvisionSpec, now: dt.datetime) -> str:
    values = msgspec.to_builtins(spec)
    for table in [values, *(v for v in values.values() if isinstance(v, dict))]:
        for key in SECRET_KEYS & set(table):
            table[key] = ""
    values["applied_at"] = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return to_toml(
        values,
        "Applied by vrlms-edge; secrets removed. To provision again, edit the values,\n"
        "set the secrets and delete the applied_at line.",
    )


def apply(
    provision_file: Path,
    settings: Settings,
    *,
    config_file: Path,
    now: dt.datetime,
    network_dir: Path | None = None,
    owner: str | None = None,
    enroll: Callable[[Settings, str, str], bool] | None = None,
) -> ProvisionResult:
    """Apply the file once. `enroll(settings, url, token) -> bool` enrolls with the org
    server; when it fails (no network yet, say) the URL and token are kept in a 0600 file in
    the data dir, to run `vrlms-edge enroll` with later."""
    spec = parse_spec(provision_file.read_text())
    if spec.applied_at:
        return ProvisionResult(applied=False, steps=[f"already applied at {spec.applied_at}"])
    result = ProvisionResult(applied=True)
    update_config(config_file, spec)
    result.steps.append(f"settings written to {config_file}")
    if spec.box_name:
        settings = msgspec.structs.replace(settings, box_name=spec.box_name)
    if spec.network and network_dir is not None:
        network_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(network_dir / STATIC_NETWORK_FILE, network_unit(spec.network))
        result.steps.append(f"static address {spec.network.address}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    result.steps += asyncio.run(_apply_database(settings, spec))
    if spec.org_server and spec.org_server.enrollment_token:
        url, token = spec.org_server.url, spec.org_server.enrollment_token
        if enroll is not None and enroll(settings, url, token):
            result.steps.append(f"enrolled with {url}")
        else:
            pending = settings.data_dir / PENDING_ENROLLMENT_FILE
            _write_atomic(pending, to_toml({"url": url, "token": token}), mode=0o600)
            result.steps.append(f"enrollment with {url} failed; kept for later in {pending}")
    if owner:
        chown_tree(settings.data_dir, owner)
    _write_atomic(provision_file, scrubbed(spec, now))
    result.steps.append("secrets removed from the provisioning file")
    return result
