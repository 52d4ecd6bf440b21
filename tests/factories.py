"""Test data written straight into the real database: orgs, people, devices, lessons,
classes, sessions and bearer tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vrlms_edge.domain.tokens import issue_token
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


def now() -> datetime:
    return datetime.now(UTC)


async def make_org(db: Database, slug: str = "school") -> Org:
    org = Org(id=new_id(), slug=slug, name=slug.title())
    async with db.write() as s:
        s.add(org)
    return org


async def make_user(db: Database, org: Org, role: Role, nickname: str) -> User:
    user = User(
        id=new_id(), org_id=org.id, role=role, nickname=nickname, display_name=nickname.title()
    )
    async with db.write() as s:
        s.add(user)
    return user


async def make_device(
    db: Database, org: Org, device_id: str, *, bound_user: User | None = None
) -> Device:
    device = Device(
        id=new_id(),
        org_id=org.id,
        device_id=device_id,
        name=device_id,
        status=DeviceStatus.approved,
        bound_user_id=bound_user.id if bound_user else None,
    )
    async with db.write() as s:
        s.add(device)
    return device


async def token_for(db: Database, user: User, device: Device | None = None) -> str:
    token, _ = await issue_token(
        db, user, now=now(), ttl_s=3600, device_pk=device.id if device else None
    )
    return token


async def make_lessons(db: Database, org: Org, count: int) -> list[Lesson]:
    course = Course(id=new_id(), org_id=org.id, title="Science")
    module = Module(id=new_id(), org_id=org.id, course_id=course.id, title="Cells")
    lessons = [
        Lesson(
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
    started = started_at or now() - timedelta(minutes=5)
    session = Session(
        id=new_id(),
        org_id=org.id,
        class_id=klass.id,
        title="Today",
        status=SessionStatus.stopped if ended_at else SessionStatus.playing,
        lesson_id=lessons[0].id if lessons else None,
        rev=1,
        started_at=started,
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
class Student:
    user: User
    device: Device
    token: str


@dataclass
class Classroom:
    org: Org
    teacher: User
    teacher_token: str
    admin: User
    admin_token: str
    klass: Class
    lessons: list[Lesson]
    session: Session
    students: list[Student] = field(default_factory=list)


async def classroom(
    db: Database, *, students: int = 3, slug: str = "school", lessons: int = 2
) -> Classroom:
    """An org with an admin, a teacher, a class of students each on their own headset, some
    lessons and a playing session of that class."""
    org = await make_org(db, slug)
    teacher = await make_user(db, org, Role.teacher, f"{slug}-teacher")
    admin = await make_user(db, org, Role.admin, f"{slug}-admin")
    people = [await make_user(db, org, Role.student, f"{slug}-s{i:02d}") for i in range(students)]
    devices = [
        await make_device(db, org, f"{slug}-hs{i:02d}", bound_user=u) for i, u in enumerate(people)
    ]
    klass = await make_class(db, org, teacher, people)
    lesson_rows = await make_lessons(db, org, lessons)
    session = await make_session(db, org, klass, lesson_rows)
    return Classroom(
        org=org,
        teacher=teacher,
        teacher_token=await token_for(db, teacher),
        admin=admin,
        admin_token=await token_for(db, admin),
        klass=klass,
        lessons=lesson_rows,
        session=session,
        students=[
            Student(user=u, device=d, token=await token_for(db, u, d))
            for u, d in zip(people, devices, strict=True)
        ],
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
