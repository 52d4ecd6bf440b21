"""Prepare a box data directory for the benchmarks: one org, a teacher, N students
(bench0001..) each with an approved device bound to them (BENCH-HS-0001..), all enrolled in
one class, a lesson, and one paused session of that class; plus a bearer token per headset
(rows as `issue_token` makes them, bound to the device as a headset's login is) and one for
the teacher.

    python -m bench.box_setup --data-dir DIR --students N    # prints the tokens as JSON

Tokens are written directly rather than through POST /api/login/: a thousand scrypt PIN checks
would cost minutes and measure nothing the WebSocket benchmarks are about.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vrlms_edge.config import Settings
from vrlms_edge.domain.tokens import token_hash
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    AuthToken,
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
)

TOKEN_TTL_S = 24 * 3600  # outlives any bench run


async def setup(data_dir: Path, students: int) -> dict[str, object]:
    settings = Settings(data_dir=data_dir)
    db = Database(settings.database_url_resolved)
    now = datetime.now(UTC)
    try:
        async with db.write() as s:
            org = Org(slug="bench", name="Bench school")
            s.add(org)
            await s.flush()
            teacher = User(
                org_id=org.id, role=Role.teacher, nickname="benchteacher", display_name="Teacher"
            )
            s.add(teacher)
            await s.flush()
            klass = Class(org_id=org.id, name="Bench class", teacher_id=teacher.id)
            course = Course(org_id=org.id, title="Bench course")
            s.add_all([klass, course])
            await s.flush()
            module = Module(org_id=org.id, course_id=course.id, title="Bench module")
            s.add(module)
            await s.flush()
            lesson = Lesson(
                org_id=org.id,
                module_id=module.id,
                title="Bench lesson",
                apk_package="com.example.lesson",
                launch={},
                duration_s=600,
            )
            s.add(lesson)
            await s.flush()
            session = Session(
                org_id=org.id,
                class_id=klass.id,
                title="Bench session",
                created_by=teacher.id,
                status=SessionStatus.paused,
                lesson_id=lesson.id,
                anchor_server_ms=int(now.timestamp() * 1000),
                anchor_position_ms=0,
                rev=1,
            )
            s.add(session)
            await s.flush()
            s.add(SessionLesson(org_id=org.id, session_id=session.id, lesson_id=lesson.id))
            users = [
                User(
                    org_id=org.id,
                    role=Role.student,
                    nickname=f"bench{i:04d}",
                    display_name=f"Bench {i:04d}",
                )
                for i in range(1, students + 1)
            ]
            s.add_all(users)
            await s.flush()
            devices = [
                Device(
                    org_id=org.id,
                    device_id=f"BENCH-HS-{i:04d}",
                    name=f"Bench headset {i:04d}",
                    status=DeviceStatus.approved,
                    bound_user_id=user.id,
                )
                for i, user in enumerate(users, start=1)
            ]
            s.add_all(devices)
            s.add_all(Enrollment(org_id=org.id, class_id=klass.id, user_id=u.id) for u in users)
            await s.flush()
            pairs = list(zip(users, devices, strict=True))
            session_id = session.id
            # AuthToken rows as issue_token makes them, all in this one transaction (a
            # transaction per token costs ~20 s for a thousand headsets here).
            teacher_token = secrets.token_urlsafe(32)
            tokens = [secrets.token_urlsafe(32) for _ in pairs]
            expires = now + timedelta(seconds=TOKEN_TTL_S)
            s.add(
                AuthToken(
                    org_id=org.id,
                    token_hash=token_hash(teacher_token),
                    user_id=teacher.id,
                    expires_at=expires,
                )
            )
            s.add_all(
                AuthToken(
                    org_id=org.id,
                    token_hash=token_hash(token),
                    user_id=user.id,
                    device_id=device.id,
                    expires_at=expires,
                )
                for token, (user, device) in zip(tokens, pairs, strict=True)
            )
    finally:
        await db.dispose()
    return {"session_id": session_id, "teacher_token": teacher_token, "student_tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--students", type=int, required=True)
    args = parser.parse_args()
    settings = Settings(data_dir=args.data_dir)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url_resolved, settings.sqlite_path)  # runs its own loop
    print(json.dumps(asyncio.run(setup(args.data_dir, args.students))))


if __name__ == "__main__":
    main()
