"""Test data: an org with an admin, two teachers, students, classes, a catalog and devices,
written into the real database of a running box. The live classroom part (`make_classroom`)
makes a teacher's class of students with approved, bound headsets and a session of two
lessons, with tokens from domain/tokens.issue_token."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from vrlms_edge.domain.passwords import hash_secret
from vrlms_edge.domain.tokens import issue_token
from vrlms_edge.live.clock import ServerClock
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
    Session,
    SessionLesson,
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


# --- the live classroom ---------------------------------------------------------------

TOKEN_TTL_S = 3600


def fresh_slug() -> str:
    """An org slug of its own, for tests that share one box."""
    return f"org-{uuid.uuid4().hex[:10]}"


@dataclass
class Headset:
    user: User
    device: Device
    token: str


@dataclass
class Classroom:
    org: Org
    teacher: User
    teacher_token: str
    klass: Class
    lessons: list[Lesson]
    session: Session
    headsets: list[Headset] = field(default_factory=list)


async def make_user(db: Database, org: Org, role: Role, nickname: str) -> User:
    user = User(org_id=org.id, role=role, nickname=nickname, display_name=nickname.title())
    async with db.write() as s:
        s.add(user)
    return user


async def add_headset_device(
    db: Database,
    org: Org,
    device_id: str,
    *,
    status: DeviceStatus = DeviceStatus.approved,
    bound_user: User | None = None,
) -> Device:
    device = Device(
        org_id=org.id,
        device_id=device_id,
        name=device_id,
        status=status,
        bound_user_id=bound_user.id if bound_user is not None else None,
    )
    async with db.write() as s:
        s.add(device)
    return device


async def token_for(
    db: Database, clock: ServerClock, user: User, device: Device | None = None
) -> str:
    token, _ = await issue_token(
        db,
        user,
        now=clock.now(),
        ttl_s=TOKEN_TTL_S,
        device_pk=device.id if device is not None else None,
    )
    return token


async def make_classroom(
    db: Database,
    clock: ServerClock,
    students: int = 3,
    *,
    slug: str = "school",
    launch: dict[str, Any] | None = None,
) -> Classroom:
    """An org, a teacher, a class of `students` with approved bound headsets, two lessons and an
    idle session holding both."""
    org = Org(slug=slug, name=slug.title())
    async with db.write() as s:
        s.add(org)
    teacher = await make_user(db, org, Role.teacher, f"{slug}-teacher")
    klass = Class(org_id=org.id, name="Class 1", teacher_id=teacher.id)
    course = Course(org_id=org.id, title="Science")
    async with db.write() as s:
        s.add_all([klass, course])
    module = Module(org_id=org.id, course_id=course.id, title="Planets")
    async with db.write() as s:
        s.add(module)
    lessons = [
        Lesson(
            org_id=org.id,
            module_id=module.id,
            title=f"Lesson {n}",
            apk_package=f"com.example.lesson{n}",
            launch=launch or {"scene": f"scene{n}"},
            duration_s=600,
            position=n,
        )
        for n in (1, 2)
    ]
    session = Session(org_id=org.id, class_id=klass.id, title="Today", created_by=teacher.id)
    async with db.write() as s:
        s.add_all([*lessons, session])
    async with db.write() as s:
        for n, lesson in enumerate(lessons):
            s.add(
                SessionLesson(org_id=org.id, session_id=session.id, lesson_id=lesson.id, position=n)
            )
    room = Classroom(
        org=org,
        teacher=teacher,
        teacher_token=await token_for(db, clock, teacher),
        klass=klass,
        lessons=lessons,
        session=session,
    )
    for n in range(1, students + 1):
        room.headsets.append(await add_student(db, clock, room, n))
    return room


async def add_student(db: Database, clock: ServerClock, room: Classroom, n: int) -> Headset:
    user = await make_user(db, room.org, Role.student, f"{room.org.slug}-student{n:02d}")
    device = await add_headset_device(db, room.org, f"{room.org.slug}-HS-{n:02d}", bound_user=user)
    async with db.write() as s:
        s.add(Enrollment(org_id=room.org.id, class_id=room.klass.id, user_id=user.id))
    return Headset(user=user, device=device, token=await token_for(db, clock, user, device))
