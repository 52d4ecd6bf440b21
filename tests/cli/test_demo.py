"""`vrlms-edge demo [--if-empty]`: the demo school exactly as the README promises."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import run_cli
from vrlms_edge.domain.passwords import verify_secret


def _one(conn: sqlite3.Connection, sql: str, *args: object) -> object:
    return conn.execute(sql, args).fetchone()[0]


def test_demo_loads_the_demo_school_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    loaded = run_cli(data_dir, "demo", "--if-empty")
    assert loaded.returncode == 0, loaded.stderr
    for expected in (
        "teacher  teacher",
        "PIN 1234, password teacher-demo-pass",
        "admin    admin",
        "password admin-demo-pass",
        "student01..student30",
        "PIN 1001..1030",
    ):
        assert expected in loaded.stdout

    with sqlite3.connect(data_dir / "vrlms.sqlite3") as conn:
        assert _one(conn, "SELECT name FROM orgs WHERE slug='demo'") == "Demo School"
        users = dict(conn.execute("SELECT nickname, role FROM users").fetchall())
        assert users.pop("teacher") == "teacher" and users.pop("admin") == "admin"
        assert users == {f"student{n:02d}": "student" for n in range(1, 31)}
        pin, password = conn.execute(
            "SELECT pin_hash, password_hash FROM users WHERE nickname='teacher'"
        ).fetchone()
        assert verify_secret("1234", pin) and verify_secret("teacher-demo-pass", password)
        admin = _one(conn, "SELECT password_hash FROM users WHERE nickname='admin'")
        assert verify_secret("admin-demo-pass", str(admin))
        student07 = _one(conn, "SELECT pin_hash FROM users WHERE nickname='student07'")
        assert verify_secret("1007", str(student07))
        bound = conn.execute(
            "SELECT d.device_id, d.status, u.nickname FROM devices d "
            "JOIN users u ON u.id = d.bound_user_id ORDER BY d.device_id"
        ).fetchall()
        assert bound == [(f"DEMO-HS-{n:02d}", "approved", f"student{n:02d}") for n in range(1, 31)]
        klass = conn.execute(
            "SELECT c.id, u.nickname FROM classes c JOIN users u ON u.id = c.teacher_id "
            "WHERE c.name='Demo Class'"
        ).fetchone()
        assert klass[1] == "teacher"
        assert _one(conn, "SELECT count(*) FROM enrollments WHERE class_id=?", klass[0]) == 30
        course = _one(conn, "SELECT id FROM courses WHERE title='Solar System'")
        assert _one(conn, "SELECT count(*) FROM modules WHERE course_id=?", course) >= 2
        packages = [
            r[0]
            for r in conn.execute(
                "SELECT l.apk_package FROM lessons l JOIN modules m ON m.id = l.module_id "
                "WHERE m.course_id=?",
                (course,),
            )
        ]
        assert len(packages) >= 4 and "com.vrlms.solarsystem.planets" in packages
        session = conn.execute(
            "SELECT id, status, class_id FROM sessions WHERE org_id="
            "(SELECT id FROM orgs WHERE slug='demo')"
        ).fetchall()
        assert len(session) == 1 and session[0][1:] == ("idle", klass[0])
        assert (
            _one(conn, "SELECT count(*) FROM session_lessons WHERE session_id=?", session[0][0])
            == 2
        )

    again = run_cli(data_dir, "demo", "--if-empty")
    assert again.returncode == 0 and "nothing loaded" in again.stderr
    twice = run_cli(data_dir, "demo")
    assert twice.returncode == 1 and "already loaded" in twice.stderr
    with sqlite3.connect(data_dir / "vrlms.sqlite3") as conn:
        assert _one(conn, "SELECT count(*) FROM users") == 32
