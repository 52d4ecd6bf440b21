"""Test data made straight in the database: an org with a teacher, a class of students with
approved headsets, a lesson and a session; tokens issued with domain/tokens.issue_token.
`classroom` (tracking tests) adds an admin and a session that is already playing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
    SessionStatus,
    User,
    new_id,
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


# --- tracking: a classroom whose session is playing ------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


async def make_org(db: Database, slug: str = "school") -> Org:
    org = Org(id=new_id(), slug=slug, name=slug.title())
    async with db.write() as s:
        s.add(org)
    return org


async def make_lessons(db: Database, org: Org, count: int) -> list[Lesson]:
    course = Course(id=new_id(), org_id=org.id, title="Science")
    module = Module(id=new_id(), org_id=org.id, course_id=course.id, title="Cells")
    lessons = [
        Lesson(
            id=new_id(),
            org_id=org.id,
            module_id=module.id,
            title=f"Lesson {i + 1}",
            apk_package=f"com.example.lesson{i + 1}",
            position=i,
        )
        for i in range(count)
    ]
    async with db.write() as s:
        s.add(course)
        await s.flush()
        s.add(module)
        await s.flush()
        s.add_all(lessons)
    return lessons


async def make_class(db: Database, org: Org, teacher: User, students: list[User]) -> Class:
    klass = Class(id=new_id(), org_id=org.id, name="Class 7B", teacher_id=teacher.id)
    async with db.write() as s:
        s.add(klass)
        await s.flush()
        s.add_all(Enrollment(org_id=org.id, class_id=klass.id, user_id=u.id) for u in students)
    return klass


async def make_session(
    db: Database,
    org: Org,
    klass: Class,
    lessons: list[Lesson],
    *,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
) -> Session:
    """A session that started `started_at` (default five minutes ago): playing, or stopped
    at `ended_at`."""
    session = Session(
        id=new_id(),
        org_id=org.id,
        class_id=klass.id,
        title="Today",
        status=SessionStatus.stopped if ended_at else SessionStatus.playing,
        lesson_id=lessons[0].id if lessons else None,
        rev=1,
        started_at=started_at or now() - timedelta(minutes=5),
        ended_at=ended_at,
    )
    async with db.write() as s:
        s.add(session)
        await s.flush()
        s.add_all(
            SessionLesson(org_id=org.id, session_id=session.id, lesson_id=lesson.id, position=i)
            for i, lesson in enumerate(lessons)
        )
    return session


@dataclass
class TrackingRoom:
    org: Org
    teacher: User
    teacher_token: str
    admin: User
    admin_token: str
    klass: Class
    lessons: list[Lesson]
    session: Session
    students: list[Headset] = field(default_factory=list)


async def classroom(
    db: Database, *, students: int = 3, slug: str = "school", lessons: int = 2
) -> TrackingRoom:
    """An org with an admin, a teacher, a class of students each on their own bound headset,
    some lessons and a playing session of that class."""
    clock = ServerClock()
    org = await make_org(db, slug)
    teacher = await make_user(db, org, Role.teacher, f"{slug}-teacher")
    admin = await make_user(db, org, Role.admin, f"{slug}-admin")
    people = [await make_user(db, org, Role.student, f"{slug}-s{i:02d}") for i in range(students)]
    devices = [
        await add_headset_device(db, org, f"{slug}-hs{i:02d}", bound_user=u)
        for i, u in enumerate(people)
    ]
    klass = await make_class(db, org, teacher, people)
    lesson_rows = await make_lessons(db, org, lessons)
    session = await make_session(db, org, klass, lesson_rows)
    return TrackingRoom(
        org=org,
        teacher=teacher,
        teacher_token=await token_for(db, clock, teacher),
        admin=admin,
        admin_token=await token_for(db, clock, admin),
        klass=klass,
        lessons=lesson_rows,
        session=session,
        students=[
            Headset(user=u, device=d, token=await token_for(db, clock, u, d))
            for u, d in zip(people, devices, strict=True)
        ],
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
