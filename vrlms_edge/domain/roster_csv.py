"""Roster files: import and export of `class,nickname,display_name,role,pin,device_id` CSV.

Import is all-or-nothing: the whole file is checked first and every bad row is reported with
its line number and reason; only a file without errors is applied, in ONE write transaction.
A row creates a new teacher or student (admins need a password: `users add`), puts them in
the named class (created if new; a teacher row makes its teacher) and, with a device_id,
approves that headset and binds it to them. A person may appear on several rows only to be in
several classes; the rows must then agree on everything else.

Export writes the same format for teachers and students, PIN column empty (only hashes are
stored), so a file can be exported, completed and imported on another box.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain.devices import check_device_id
from vrlms_edge.domain.passwords import hash_secret_async
from vrlms_edge.domain.roster import check_display_name, check_nickname, check_pin
from vrlms_edge.errors import AppError
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    Class,
    Device,
    DeviceStatus,
    Enrollment,
    Org,
    Role,
    User,
    new_id,
)

COLUMNS: Final = ("class", "nickname", "display_name", "role", "pin", "device_id")
# Bigger than any school's roster; bounds the memory and time one import may take.
MAX_ROWS: Final = 20_000
# An error list past this many rows says enough; the rest is summarized in one line.
MAX_REPORTED_ERRORS: Final = 1_000
IMPORTABLE_ROLES: Final = (Role.teacher, Role.student)

Progress = Callable[[int, int], None]


class RowError(msgspec.Struct, kw_only=True):
    line: int
    reason: str


class RosterImport(msgspec.Struct, kw_only=True):
    """What an import did (or, with errors or dry_run, would have done: nothing is written)."""

    dry_run: bool
    applied: bool
    users: int = 0
    classes_created: int = 0
    enrollments: int = 0
    devices: int = 0
    errors: list[RowError] = []


@dataclass
class _Person:
    line: int
    nickname: str
    display_name: str
    role: Role
    pin: str
    device_id: str
    classes: list[str] = field(default_factory=list)


@dataclass
class _Parsed:
    people: dict[str, _Person] = field(default_factory=dict)
    # class name -> (teacher nickname, line of the row that made them teacher)
    teachers: dict[str, tuple[str, int]] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)


def _reason(exc: AppError) -> str:
    return exc.message


def parse_roster(text: str) -> _Parsed:
    """Check the file alone (no database): columns, fields and duplicates."""
    parsed = _Parsed()
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header: list[str] | None = None
    device_lines: dict[str, tuple[str, int]] = {}
    rows = 0
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in record]
                problems = _header_problems(header)
                if problems:
                    parsed.errors.append(RowError(line=line, reason=problems))
                    return parsed
                continue
            rows += 1
            if rows > MAX_ROWS:
                parsed.errors.append(RowError(line=line, reason=f"more than {MAX_ROWS} rows"))
                return parsed
            reasons = _check_row(parsed, header, record, line, device_lines)
            if reasons:
                parsed.errors.append(RowError(line=line, reason="; ".join(reasons)))
    except csv.Error as exc:
        parsed.errors.append(RowError(line=reader.line_num, reason=f"not valid CSV: {exc}"))
    if header is None:
        parsed.errors.append(RowError(line=1, reason="empty file: expected a header row"))
    return parsed


def _header_problems(header: list[str]) -> str:
    problems = []
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        problems.append(f"unknown column {unknown[0]!r}")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        problems.append("missing column(s) " + ", ".join(missing))
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        problems.append(f"column {duplicated[0]!r} appears twice")
    if problems:
        problems.append("expected header: " + ",".join(COLUMNS))
    return "; ".join(problems)


def _check_row(
    parsed: _Parsed,
    header: list[str],
    record: list[str],
    line: int,
    device_lines: dict[str, tuple[str, int]],
) -> list[str]:
    if len(record) != len(header):
        return [f"expected {len(header)} fields, found {len(record)}"]
    row = {name: cell.strip() for name, cell in zip(header, record, strict=True)}
    reasons: list[str] = []
    for name in ("nickname", "display_name", "role", "pin"):
        if not row[name]:
            reasons.append(f"missing {name}")
    nickname, klass, device_id = row["nickname"], row["class"], row["device_id"]
    checks: list[tuple[str, Callable[[str], object]]] = [
        ("nickname", check_nickname),
        ("display_name", check_display_name),
        ("pin", check_pin),
        ("device_id", check_device_id),
    ]
    for name, check in checks:
        if row[name]:
            try:
                check(row[name])
            except AppError as exc:
                reasons.append(_reason(exc))
    if klass:
        try:
            check_display_name(klass, "class")
        except AppError as exc:
            reasons.append(_reason(exc))
    role: Role | None = None
    if row["role"]:
        try:
            role = Role(row["role"].lower())
        except ValueError:
            role = None
        if role not in IMPORTABLE_ROLES:
            reasons.append(
                f"bad role {row['role']!r}: teacher or student"
                + (" (add admins with `vrlms-edge users add`)" if role == Role.admin else "")
            )
            role = None
    if reasons or role is None:
        return reasons
    if device_id:
        owner = device_lines.get(device_id)
        if owner is not None and owner[0] != nickname:
            reasons.append(f"duplicate device_id {device_id!r} (first on line {owner[1]})")
        else:
            device_lines.setdefault(device_id, (nickname, line))
    person = parsed.people.get(nickname)
    if person is None:
        person = _Person(line, nickname, row["display_name"], role, row["pin"], device_id)
    elif not (
        klass
        and klass not in person.classes
        and (person.display_name, person.role, person.pin)
        == (row["display_name"], role, row["pin"])
        and (not device_id or not person.device_id or device_id == person.device_id)
    ):
        reasons.append(f"duplicate nickname {nickname!r} (first on line {person.line})")
    if role == Role.teacher and klass:
        taught = parsed.teachers.get(klass)
        if taught is not None and taught[0] != nickname:
            reasons.append(f"class {klass!r} already has teacher {taught[0]!r} (line {taught[1]})")
    if reasons:
        return reasons
    parsed.people[nickname] = person
    person.device_id = person.device_id or device_id
    if klass:
        person.classes.append(klass)
        if role == Role.teacher:
            parsed.teachers.setdefault(klass, (nickname, line))
    return []


async def _database_errors(s: AsyncSession, org_id: str, parsed: _Parsed) -> list[RowError]:
    """What the file conflicts with in the database (nicknames, devices, class teachers)."""
    errors: list[RowError] = []
    people = list(parsed.people.values())
    existing: set[str] = set()
    nicknames = [p.nickname for p in people]
    for start in range(0, len(nicknames), 500):
        rows = await s.execute(
            select(User.nickname).where(
                User.org_id == org_id, User.nickname.in_(nicknames[start : start + 500])
            )
        )
        existing.update(rows.scalars())
    devices = await _devices(s, org_id, [p.device_id for p in people if p.device_id])
    owners = [d.bound_user_id for d in devices.values() if d.bound_user_id]
    bound_names = await _nicknames(s, owners)
    classes = await _classes(s, org_id, sorted(parsed.teachers))
    teacher_names = await _nicknames(s, [c.teacher_id for c in classes.values() if c.teacher_id])
    for person in people:
        reasons = []
        if person.nickname in existing:
            reasons.append(f"nickname {person.nickname!r} already exists on this box")
        device = devices.get(person.device_id)
        if device is not None and device.deleted_at is None:
            if device.status == DeviceStatus.blocked:
                reasons.append(f"device_id {person.device_id!r} is blocked")
            elif device.bound_user_id and device.bound_user_id in bound_names:
                owner = bound_names[device.bound_user_id]
                reasons.append(f"device_id {person.device_id!r} is already bound to {owner!r}")
        if reasons:
            errors.append(RowError(line=person.line, reason="; ".join(reasons)))
    for name, (_teacher, line) in parsed.teachers.items():
        klass = classes.get(name)
        if klass is not None and klass.teacher_id and klass.teacher_id in teacher_names:
            current = teacher_names[klass.teacher_id]
            errors.append(
                RowError(line=line, reason=f"class {name!r} already has teacher {current!r}")
            )
    return errors


async def _devices(s: AsyncSession, org_id: str, device_ids: list[str]) -> dict[str, Device]:
    found: dict[str, Device] = {}
    for start in range(0, len(device_ids), 500):
        rows = await s.execute(
            select(Device).where(
                Device.org_id == org_id, Device.device_id.in_(device_ids[start : start + 500])
            )
        )
        found.update({d.device_id: d for d in rows.scalars()})
    return found


async def _nicknames(s: AsyncSession, user_ids: list[str]) -> dict[str, str]:
    rows = await s.execute(
        select(User.id, User.nickname).where(User.id.in_(user_ids), User.deleted_at.is_(None))
    )
    return dict(rows.all())


async def _classes(s: AsyncSession, org_id: str, names: list[str]) -> dict[str, Class]:
    rows = await s.execute(
        select(Class).where(
            Class.org_id == org_id, Class.name.in_(names), Class.deleted_at.is_(None)
        )
    )
    return {c.name: c for c in rows.scalars()}


class _Refused(Exception):
    """Raised inside the write transaction to roll it back."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__("roster conflicts with the database")
        self.errors = errors


async def _hash_pins(people: list[_Person], progress: Progress | None) -> dict[str, str]:
    hashes: dict[str, str] = {}
    done = 0

    async def one(person: _Person) -> None:
        nonlocal done
        hashes[person.nickname] = await hash_secret_async(person.pin)
        done += 1
        if progress is not None:
            progress(done, len(people))

    await asyncio.gather(*(one(p) for p in people))
    return hashes


async def import_roster(
    db: Database,
    org_id: str | None,
    text: str,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    new_org: tuple[str, str] | None = None,
) -> RosterImport:
    """Check `text` (a roster CSV) and, when it has no error and dry_run is False, apply it in
    one write transaction. `progress(done, total)` follows the PIN hashing, the slow part.
    With org_id None the roster brings its org: `new_org` (slug, name) is created in the
    same transaction (a box that has none yet)."""
    if org_id is None and new_org is None:
        raise ValueError("import_roster needs org_id or new_org")
    parsed = parse_roster(text)
    report = RosterImport(dry_run=dry_run, applied=False)
    # Rows that passed the file checks are checked against the database too, so one run
    # reports every bad row.
    async with db.read() as s:
        parsed.errors += await _database_errors(s, org_id or "", parsed)
        names = sorted({c for p in parsed.people.values() for c in p.classes})
        known = await _classes(s, org_id or "", names)
    if parsed.errors:
        report.errors = _capped(parsed.errors)
        return report
    _count(report, parsed)
    report.classes_created = len(set(names) - set(known))
    if dry_run:
        return report
    people = list(parsed.people.values())
    # Hash outside the write lock: scrypt is slow on purpose.
    hashes = await _hash_pins(people, progress)
    try:
        async with db.write() as s:
            if org_id is None:
                assert new_org is not None
                org = Org(id=new_id(), slug=new_org[0], name=new_org[1])
                s.add(org)
                await s.flush()
                org_id = org.id
            errors = await _database_errors(s, org_id, parsed)
            if errors:
                raise _Refused(errors)
            report.classes_created = await _apply(s, org_id, parsed, hashes)
    except _Refused as refused:
        report.errors = _capped(refused.errors)
        return report
    report.applied = True
    return report


def _capped(errors: list[RowError]) -> list[RowError]:
    errors = sorted(errors, key=lambda e: e.line)
    if len(errors) <= MAX_REPORTED_ERRORS:
        return errors
    rest = len(errors) - MAX_REPORTED_ERRORS
    return [*errors[:MAX_REPORTED_ERRORS], RowError(line=0, reason=f"... and {rest} more")]


def _count(report: RosterImport, parsed: _Parsed) -> None:
    people = parsed.people.values()
    report.users = len(parsed.people)
    report.enrollments = sum(len(p.classes) for p in people if p.role == Role.student)
    report.devices = sum(1 for p in people if p.device_id)


async def _apply(s: AsyncSession, org_id: str, parsed: _Parsed, hashes: dict[str, str]) -> int:
    """Write the checked roster; returns how many classes were created. Users, then classes,
    then enrollments and devices are flushed in turn: the models have no relationships for
    the unit of work to order the inserts by, and foreign keys are enforced."""
    people = list(parsed.people.values())
    users = {
        p.nickname: User(
            id=new_id(),
            org_id=org_id,
            role=p.role,
            nickname=p.nickname,
            display_name=p.display_name,
            pin_hash=hashes[p.nickname],
        )
        for p in people
    }
    s.add_all(users.values())
    await s.flush()
    names = sorted({c for p in people for c in p.classes})
    classes = await _classes(s, org_id, names)
    created = 0
    for name in names:
        if name not in classes:
            classes[name] = Class(id=new_id(), org_id=org_id, name=name)
            s.add(classes[name])
            created += 1
    for klass, (teacher, _line) in parsed.teachers.items():
        classes[klass].teacher_id = users[teacher].id
    await s.flush()
    devices = await _devices(s, org_id, [p.device_id for p in people if p.device_id])
    for person in people:
        user = users[person.nickname]
        if person.role == Role.student:
            for name in person.classes:
                s.add(Enrollment(org_id=org_id, class_id=classes[name].id, user_id=user.id))
        if person.device_id:
            device = devices.get(person.device_id)
            if device is None:
                device = Device(org_id=org_id, device_id=person.device_id)
                s.add(device)
            device.deleted_at = None
            device.status = DeviceStatus.approved
            device.bound_user_id = user.id
    return created


async def export_roster(db: Database, org_id: str) -> str:
    """The org's teachers and students as roster CSV (PIN column empty): for each class by
    name its teacher then its students, then people in no class. A person's first bound
    headset (not blocked) goes in device_id."""
    async with db.read() as s:
        users = {
            u.id: u
            for u in (
                await s.execute(
                    select(User).where(
                        User.org_id == org_id,
                        User.deleted_at.is_(None),
                        User.role.in_([r.value for r in IMPORTABLE_ROLES]),
                    )
                )
            ).scalars()
        }
        classes = list(
            (
                await s.execute(
                    select(Class)
                    .where(Class.org_id == org_id, Class.deleted_at.is_(None))
                    .order_by(Class.name, Class.id)
                )
            ).scalars()
        )
        enrolled = (
            await s.execute(
                select(Enrollment.class_id, Enrollment.user_id).where(
                    Enrollment.org_id == org_id, Enrollment.deleted_at.is_(None)
                )
            )
        ).all()
        devices: dict[str, str] = {}
        for device in (
            await s.execute(
                select(Device)
                .where(
                    Device.org_id == org_id,
                    Device.deleted_at.is_(None),
                    Device.bound_user_id.is_not(None),
                    Device.status != DeviceStatus.blocked,
                )
                .order_by(Device.device_id)
            )
        ).scalars():
            assert device.bound_user_id is not None
            devices.setdefault(device.bound_user_id, device.device_id)
    members: dict[str, list[User]] = {c.id: [] for c in classes}
    for class_id, user_id in enrolled:
        if class_id in members and user_id in users:
            members[class_id].append(users[user_id])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    placed: set[str] = set()

    def row(klass: str, user: User) -> None:
        placed.add(user.id)
        writer.writerow(
            [klass, user.nickname, user.display_name, user.role, "", devices.get(user.id, "")]
        )

    for klass in classes:
        if klass.teacher_id in users:
            row(klass.name, users[klass.teacher_id])
        for student in sorted(members[klass.id], key=lambda u: u.nickname):
            row(klass.name, student)
    for user in sorted(users.values(), key=lambda u: u.nickname):
        if user.id not in placed:
            row("", user)
    return out.getvalue()
