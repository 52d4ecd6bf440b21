"""Test data made straight in the database: the one set of makers (orgs, users, headsets,
lessons, classes, sessions; tokens issued with domain/tokens.issue_token) that every test
module and tests/world.py build from.

`make_classroom` (live tests): an org with a teacher, a class of students with approved
headsets, lessons and an idle session. `classroom` (tracking tests) adds an admin and a session
that is already playing."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
    SessionStatus,
    User,
    new_id,
)

TOKEN_TTL_S = 3600
PIN = "1234"
PASSWORD = "correct-horse-battery"


@functools.cache
def hashed(secret: str) -> str:
    # One scrypt per secret for the whole run: a salted hash may be shared by test users.
    return hash_secret(secret)


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


async def make_org(db: Database, slug: str = "school", *, name: str | None = None) -> Org:
    org = Org(id=new_id(), slug=slug, name=name or slug.title())
    async with db.write() as s:
        s.add(org)
    return org


async def make_user(
    db: Database,
    org: Org,
    role: Role,
    nickname: str,
    *,
    pin: str | None = None,
    password: str | None = None,
) -> User:
    """A user who can log in only with the secrets given (none: made for direct tokens)."""
    user = User(
        org_id=org.id,
        role=role,
        nickname=nickname,
        display_name=nickname.title(),
        pin_hash=hashed(pin) if pin else None,
        password_hash=hashed(password) if password else None,
    )
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
    model: str = "",
) -> Device:
    device = Device(
        org_id=org.id,
        device_id=device_id,
        name=device_id,
        model=model,
        status=status,
        bound_user_id=bound_user.id if bound_user is not None else None,
    )
    async with db.write() as s:
        s.add(device)
    return device


async def make_lessons(
    db: Database,
    org: Org,
    titles: Sequence[str],
    *,
    module: str = "Cells",
    launch: dict[str, Any] | None = None,
    duration_s: int | None = None,
) -> list[Lesson]:
    """A course "Science" with one module holding a lesson per title, in that order. Each
    opens com.example.<title, lower case without spaces> with `launch` (default: its title as
    the scene)."""
    course = Course(id=new_id(), org_id=org.id, title="Science")
    holder = Module(id=new_id(), org_id=org.id, course_id=course.id, title=module)
    lessons = [
        Lesson(
            id=new_id(),
            org_id=org.id,
            module_id=holder.id,
            title=title,
            apk_package=f"com.example.{title.lower().replace(' ', '')}",
            launch=launch or {"scene": title},
            duration_s=duration_s,
            position=i,
        )
        for i, title in enumerate(titles)
    ]
    async with db.write() as s:
        s.add(course)
        await s.flush()
        s.add(holder)
        await s.flush()
        s.add_all(lessons)
    return lessons


async def enroll(db: Database, klass: Class, students: Sequence[User]) -> None:
    async with db.write() as s:
        s.add_all(
            Enrollment(org_id=klass.org_id, class_id=klass.id, user_id=u.id) for u in students
        )


async def make_class(
    db: Database, org: Org, teacher: User, students: Sequence[User], *, name: str = "Class 7B"
) -> Class:
    klass = Class(id=new_id(), org_id=org.id, name=name, teacher_id=teacher.id)
    async with db.write() as s:
        s.add(klass)
    await enroll(db, klass, students)
    return klass


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
    org = await make_org(db, slug)
    teacher = await make_user(db, org, Role.teacher, f"{slug}-teacher")
    klass = await make_class(db, org, teacher, [], name="Class 1")
    lessons = await make_lessons(
        db, org, ["Lesson 1", "Lesson 2"], module="Planets", launch=launch, duration_s=600
    )
    session = Session(org_id=org.id, class_id=klass.id, title="Today", created_by=teacher.id)
    async with db.write() as s:
        s.add(session)
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
    await enroll(db, room.klass, [user])
    return Headset(user=user, device=device, token=await token_for(db, clock, user, device))


# --- tracking: a classroom whose session is playing ------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


async def make_session(
    db: Database,
    org: Org,
    klass: Class,
    lessons: list[Lesson],
    *,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
) -> Session:
    """A session that started `started_at` (default an hour ago, so that event times taken when
    the test module was imported fall inside it however long the run): playing, or stopped
    at `ended_at`."""
    session = Session(
        id=new_id(),
        org_id=org.id,
        class_id=klass.id,
        title="Today",
        status=SessionStatus.stopped if ended_at else SessionStatus.playing,
        lesson_id=lessons[0].id if lessons else None,
        rev=1,
        started_at=started_at or now() - timedelta(hours=1),
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
    lesson_rows = await make_lessons(db, org, [f"Lesson {i + 1}" for i in range(lessons)])
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
