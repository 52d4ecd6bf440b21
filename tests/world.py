"""Test data for API tests: an org with an admin, two teachers, students, classes, a catalog
and devices, written into the real database of a running box (with tests/factories.py's
makers), and logging in over HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests import factories
from tests.factories import PASSWORD, PIN, add_headset_device, make_class, make_lessons, make_user
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Class, Device, DeviceStatus, Lesson, Org, Role, User


@dataclass
class OrgWorld:
    org: Org
    admin: User
    teacher: User
    other_teacher: User
    students: list[User]
    klass: Class
    other_class: Class
    lessons: list[Lesson]
    devices: dict[str, Device] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.org.slug


async def make_org(
    db: Database, slug: str = "school", *, students: int = 3, prefix: str = ""
) -> OrgWorld:
    """An org: admin `<p>admin` (password), teachers `<p>teacher`, `<p>teacher2` (PIN and
    password), students `<p>student0..` (PIN) enrolled in `klass` (taught by `teacher`),
    `other_class` taught by `other_teacher`, and three lessons."""
    p = prefix
    org = await factories.make_org(db, slug, name=f"{slug.title()} School")
    admin = await make_user(db, org, Role.admin, f"{p}admin", password=PASSWORD)
    teacher = await make_user(db, org, Role.teacher, f"{p}teacher", pin=PIN, password=PASSWORD)
    other_teacher = await make_user(
        db, org, Role.teacher, f"{p}teacher2", pin=PIN, password=PASSWORD
    )
    pupils = [
        await make_user(db, org, Role.student, f"{p}student{i}", pin=PIN) for i in range(students)
    ]
    return OrgWorld(
        org=org,
        admin=admin,
        teacher=teacher,
        other_teacher=other_teacher,
        students=pupils,
        klass=await make_class(db, org, teacher, pupils, name=f"{p}Class 7b"),
        other_class=await make_class(db, org, other_teacher, [], name=f"{p}Class 8a"),
        lessons=await make_lessons(
            db, org, ["Solar System", "Moon Walk", "Mars Base"], module="Space", duration_s=600
        ),
    )


async def make_device(
    db: Database,
    world: OrgWorld,
    device_id: str,
    *,
    status: DeviceStatus = DeviceStatus.approved,
    bound_to: User | None = None,
) -> Device:
    row = await add_headset_device(
        db, world.org, device_id, status=status, bound_user=bound_to, model="DPVR P1"
    )
    world.devices[device_id] = row
    return row


async def login(
    http: aiohttp.ClientSession, nickname: str, *, org: str | None = None, **extra: Any
) -> dict[str, Any]:
    """POST /api/login/ expecting 200; with PIN unless `password=` is given."""
    body: dict[str, Any] = {"nickname": nickname, **extra}
    if "password" not in body and "pin" not in body:
        body["pin"] = PIN
    if org is not None:
        body["org"] = org
    async with http.post("/api/login/", json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    return dict(answer)


async def token(http: aiohttp.ClientSession, user: User, *, org: str | None = None) -> str:
    if Role(user.role) == Role.admin:
        answer = await login(http, user.nickname, org=org, password=PASSWORD)
    else:
        answer = await login(http, user.nickname, org=org)
    return str(answer["token"])


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}
