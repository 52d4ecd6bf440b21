"""Test data made straight in the database: an org with a teacher, a class of students with
approved headsets, a lesson and a session; tokens issued with domain/tokens.issue_token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

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


async def make_device(
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
    device = await make_device(db, room.org, f"{room.org.slug}-HS-{n:02d}", bound_user=user)
    async with db.write() as s:
        s.add(Enrollment(org_id=room.org.id, class_id=room.klass.id, user_id=user.id))
    return Headset(user=user, device=device, token=await token_for(db, clock, user, device))
