"""Test data for API tests: an org with an admin, two teachers, students, classes, a catalog
and devices, written into the real database of a running box."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from vrlms_edge.domain.passwords import hash_secret
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    Class,
    Course,
    Device,
    DeviceStatus,
    Enrollment,
    Lesson,
    Module,
    Org,
    Role,
    User,
)

PIN = "1234"
PASSWORD = "correct-horse-battery"


@functools.cache
def hashed(secret: str) -> str:
    # One scrypt per secret for the whole run: a salted hash may be shared by test users.
    return hash_secret(secret)


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
    async with db.write() as s:
        org = Org(slug=slug, name=f"{slug.title()} School")
        s.add(org)
        await s.flush()

        def user(role: Role, nickname: str, *, pin: bool, password: bool) -> User:
            row = User(
                org_id=org.id,
                role=role,
                nickname=nickname,
                display_name=nickname.title(),
                pin_hash=hashed(PIN) if pin else None,
                password_hash=hashed(PASSWORD) if password else None,
            )
            s.add(row)
            return row

        admin = user(Role.admin, f"{p}admin", pin=False, password=True)
        teacher = user(Role.teacher, f"{p}teacher", pin=True, password=True)
        other_teacher = user(Role.teacher, f"{p}teacher2", pin=True, password=True)
        pupils = [
            user(Role.student, f"{p}student{i}", pin=True, password=False) for i in range(students)
        ]
        await s.flush()
        klass = Class(org_id=org.id, name=f"{p}Class 7b", teacher_id=teacher.id)
        other_class = Class(org_id=org.id, name=f"{p}Class 8a", teacher_id=other_teacher.id)
        s.add_all([klass, other_class])
        course = Course(org_id=org.id, title="Science")
        s.add(course)
        await s.flush()
        for pupil in pupils:
            s.add(Enrollment(org_id=org.id, class_id=klass.id, user_id=pupil.id))
        module = Module(org_id=org.id, course_id=course.id, title="Space")
        s.add(module)
        await s.flush()
        lessons = [
            Lesson(
                org_id=org.id,
                module_id=module.id,
                title=title,
                apk_package=f"com.example.{title.lower().replace(' ', '')}",
                launch={"scene": title},
                duration_s=600,
                position=i,
            )
            for i, title in enumerate(["Solar System", "Moon Walk", "Mars Base"])
        ]
        s.add_all(lessons)
        await s.flush()
    return OrgWorld(
        org=org,
        admin=admin,
        teacher=teacher,
        other_teacher=other_teacher,
        students=pupils,
        klass=klass,
        other_class=other_class,
        lessons=lessons,
    )


async def make_device(
    db: Database,
    world: OrgWorld,
    device_id: str,
    *,
    status: DeviceStatus = DeviceStatus.approved,
    bound_to: User | None = None,
) -> Device:
    async with db.write() as s:
        row = Device(
            org_id=world.org.id,
            device_id=device_id,
            model="DPVR P1",
            status=status,
            bound_user_id=bound_to.id if bound_to else None,
        )
        s.add(row)
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
