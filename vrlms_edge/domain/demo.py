"""The demo school: what `vrlms-edge demo` (and `make run` on an empty box) loads.

Org "Demo School" (slug `demo`); teacher `teacher` (PIN 1234, password `teacher-demo-pass`);
admin `admin` (password `admin-demo-pass`); students student01..student30 (PINs 1001..1030)
with headsets DEMO-HS-01..30 approved and bound to them; class "Demo Class" taught by
`teacher` with all 30 students; course "Solar System" (2 modules, 7 lessons); and one idle
session of Demo Class with two lessons so the dashboard has something to show.

Everything is written in one transaction: the demo is loaded whole or not at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain.passwords import hash_secret_async
from vrlms_edge.errors import conflict
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

ORG_SLUG: Final = "demo"
ORG_NAME: Final = "Demo School"
TEACHER: Final = ("teacher", "Ms. Demo Teacher", "1234", "teacher-demo-pass")
ADMIN: Final = ("admin", "Demo Admin", "admin-demo-pass")
STUDENT_COUNT: Final = 30
CLASS_NAME: Final = "Demo Class"
HEADSET_MODEL: Final = "DPVR P1 Pro 4K"
HEADSET_APP_VERSION: Final = "1.0.0"
SESSION_TITLE: Final = "Solar System: first visit"


def student(n: int) -> tuple[str, str, str, str]:
    """(nickname, display name, PIN, headset device_id) of demo student n (1-based)."""
    return (f"student{n:02d}", f"Student {n:02d}", f"{1000 + n}", f"DEMO-HS-{n:02d}")


# (module title, [(lesson title, apk_package, launch parameters, duration_s)])
SOLAR_SYSTEM: Final[list[tuple[str, list[tuple[str, str, dict[str, Any], int]]]]] = [
    (
        "The Sun and the inner planets",
        [
            (
                "Journey to the Sun",
                "com.vrlms.solarsystem.sun",
                {"scene": "sun_surface", "language": "en", "difficulty": "easy"},
                420,
            ),
            (
                "Mercury and Venus",
                "com.vrlms.solarsystem.planets",
                {"scene": "inner_planets", "planets": ["mercury", "venus"], "language": "en"},
                480,
            ),
            (
                "Earth and the Moon",
                "com.vrlms.solarsystem.planets",
                {"scene": "earth_moon", "show_orbits": True, "language": "en"},
                540,
            ),
            (
                "A walk on Mars",
                "com.vrlms.solarsystem.mars",
                {"scene": "olympus_mons", "rover": "perseverance", "language": "en"},
                600,
            ),
        ],
    ),
    (
        "The outer planets",
        [
            (
                "Jupiter's great storm",
                "com.vrlms.solarsystem.planets",
                {"scene": "jupiter_red_spot", "language": "en"},
                480,
            ),
            (
                "Saturn's rings",
                "com.vrlms.solarsystem.planets",
                {"scene": "saturn_rings", "time_scale": 1000, "language": "en"},
                480,
            ),
            (
                "Quiz: the planets",
                "com.vrlms.solarsystem.quiz",
                {"quiz": "planets-1", "questions": 10, "time_limit_s": 300},
                300,
            ),
        ],
    ),
]


class DemoLogin(msgspec.Struct, kw_only=True):
    role: str
    nickname: str
    pin: str | None = None
    password: str | None = None


class DemoSummary(msgspec.Struct, kw_only=True):
    org_id: str
    users: int
    devices: int
    classes: int
    lessons: int
    session_id: str
    logins: list[DemoLogin]


def demo_logins() -> list[DemoLogin]:
    first, last = student(1), student(STUDENT_COUNT)
    return [
        DemoLogin(role="teacher", nickname=TEACHER[0], pin=TEACHER[2], password=TEACHER[3]),
        DemoLogin(role="admin", nickname=ADMIN[0], password=ADMIN[2]),
        DemoLogin(
            role="student",
            nickname=f"{first[0]}..{last[0]}",
            pin=f"{first[2]}..{last[2]}",
        ),
    ]


async def has_data(db: Database) -> bool:
    """Whether the box holds any org or user (then `demo --if-empty` loads nothing)."""
    async with db.read() as s:
        orgs = (await s.execute(select(func.count()).select_from(Org))).scalar_one()
        users = (await s.execute(select(func.count()).select_from(User))).scalar_one()
    return bool(orgs or users)


async def load_demo(
    db: Database, progress: Callable[[int, int], None] | None = None
) -> DemoSummary:
    """Load the demo school. 409 `demo_present` if org `demo` exists already.
    `progress(done, total)` follows the hashing of PINs and passwords (the slow part)."""
    async with db.read() as s:
        if (await s.execute(select(Org.id).where(Org.slug == ORG_SLUG))).scalar() is not None:
            raise conflict("demo_present", "the demo school is already loaded (org 'demo')")
    secrets = [TEACHER[2], TEACHER[3], ADMIN[2]] + [
        student(n)[2] for n in range(1, STUDENT_COUNT + 1)
    ]
    hashes = await _hash_all(secrets, progress)
    async with db.write() as s:
        if (await s.execute(select(Org.id).where(Org.slug == ORG_SLUG))).scalar() is not None:
            raise conflict("demo_present", "the demo school is already loaded (org 'demo')")
        return await _write(s, hashes)


async def _hash_all(
    secrets: list[str], progress: Callable[[int, int], None] | None
) -> dict[str, str]:
    """scrypt each secret once, concurrently in worker threads."""
    done = 0

    async def one(secret: str) -> tuple[str, str]:
        nonlocal done
        hashed = await hash_secret_async(secret)
        done += 1
        if progress is not None:
            progress(done, len(secrets))
        return secret, hashed

    return dict(await asyncio.gather(*(one(x) for x in dict.fromkeys(secrets))))


async def _write(s: AsyncSession, hashes: dict[str, str]) -> DemoSummary:
    # No ORM relationships order the inserts, so each level is flushed before the next.
    org = Org(id=new_id(), slug=ORG_SLUG, name=ORG_NAME)
    s.add(org)
    await s.flush()
    teacher = User(
        id=new_id(),
        org_id=org.id,
        role=Role.teacher,
        nickname=TEACHER[0],
        display_name=TEACHER[1],
        pin_hash=hashes[TEACHER[2]],
        password_hash=hashes[TEACHER[3]],
    )
    admin = User(
        id=new_id(),
        org_id=org.id,
        role=Role.admin,
        nickname=ADMIN[0],
        display_name=ADMIN[1],
        password_hash=hashes[ADMIN[2]],
    )
    students = []
    for n in range(1, STUDENT_COUNT + 1):
        nickname, display_name, pin, _ = student(n)
        students.append(
            User(
                id=new_id(),
                org_id=org.id,
                role=Role.student,
                nickname=nickname,
                display_name=display_name,
                pin_hash=hashes[pin],
            )
        )
    s.add_all([teacher, admin, *students])
    course = Course(
        id=new_id(),
        org_id=org.id,
        title="Solar System",
        description="A guided tour of the Sun and its planets, for ages 10-14.",
        position=0,
    )
    s.add(course)
    await s.flush()
    klass = Class(id=new_id(), org_id=org.id, name=CLASS_NAME, teacher_id=teacher.id)
    s.add(klass)
    for n, user in enumerate(students, start=1):
        s.add(
            Device(
                org_id=org.id,
                device_id=student(n)[3],
                name=f"Headset {n:02d}",
                model=HEADSET_MODEL,
                app_version=HEADSET_APP_VERSION,
                status=DeviceStatus.approved,
                bound_user_id=user.id,
            )
        )
    modules = [
        Module(id=new_id(), org_id=org.id, course_id=course.id, title=title, position=i)
        for i, (title, _) in enumerate(SOLAR_SYSTEM)
    ]
    s.add_all(modules)
    await s.flush()
    s.add_all(Enrollment(org_id=org.id, class_id=klass.id, user_id=user.id) for user in students)
    lessons = [
        Lesson(
            id=new_id(),
            org_id=org.id,
            module_id=module.id,
            title=title,
            apk_package=apk,
            launch=launch,
            duration_s=duration,
            position=i,
        )
        for module, (_, items) in zip(modules, SOLAR_SYSTEM, strict=True)
        for i, (title, apk, launch, duration) in enumerate(items)
    ]
    s.add_all(lessons)
    session = Session(
        id=new_id(),
        org_id=org.id,
        class_id=klass.id,
        title=SESSION_TITLE,
        created_by=teacher.id,
        status=SessionStatus.idle,
    )
    s.add(session)
    await s.flush()
    s.add_all(
        SessionLesson(org_id=org.id, session_id=session.id, lesson_id=lesson.id, position=i)
        for i, lesson in enumerate(lessons[:2])
    )
    return DemoSummary(
        org_id=org.id,
        users=2 + len(students),
        devices=len(students),
        classes=1,
        lessons=len(lessons),
        session_id=session.id,
        logins=demo_logins(),
    )
