"""REST latency of the box: p50/p99 of POST /api/login/ and POST /api/session/start/ with
concurrent clients against a real `vrlms-edge serve` on 127.0.0.1.

    .venv/bin/python bench/rest_latency.py [--clients 20] [--logins 200] [--starts 400]

Data (an org, a teacher, students, a class, a lesson, one session per client) is written
through the domain functions into a fresh data directory first; then the server runs as its
own process, as on the box. Every loop is bounded in count and in time (--max-seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from vrlms_edge.config import Settings
from vrlms_edge.domain import catalog, roster, sessions
from vrlms_edge.domain.principal import Principal
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Role

PIN = "2468"
PASSWORD = "bench-password-123"


async def seed(data_dir: Path, clients: int) -> None:
    settings = Settings(data_dir=data_dir)
    db = Database(settings.database_url_resolved)
    try:
        org = await roster.get_or_create_org(db, "bench", "Bench School")
        teacher = await roster.create_user(
            db, org.id, "teacher", "teacher", "Teacher", pin=PIN, password=PASSWORD
        )
        klass = await roster.create_class(db, org.id, "Bench class", teacher.id)
        students = [
            await roster.create_user(db, org.id, "student", f"s{i:02d}", f"S{i}", pin=PIN)
            for i in range(clients)
        ]
        await roster.enroll(db, org.id, klass.id, [s.id for s in students])
        course = await catalog.create_course(db, org.id, "Science")
        module = await catalog.create_module(db, org.id, course.id, "Space")
        lesson = await catalog.create_lesson(db, org.id, module.id, "Solar", "com.example.solar")
        actor = Principal(
            user_id=teacher.id,
            org_id=org.id,
            role=Role.teacher,
            nickname="teacher",
            display_name="Teacher",
            token_id="",
        )
        for _ in range(clients):
            await sessions.create_session(
                db,
                actor,
                sessions.NewSession(class_id=klass.id, lesson_ids=[lesson.id]),
                now=datetime.now(UTC),
            )
    finally:
        await db.dispose()


def spawn(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRLMS_")}
    env.update({"VRLMS_MDNS": "off", "VRLMS_LOG_LEVEL": "WARNING"})
    command = [sys.executable, "-m", "vrlms_edge", "--data-dir", str(data_dir), "serve"]
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"serve did not start: {line!r}")
    return proc, line.split()[-1]


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name:28s} n={len(ms):4d}  p50={statistics.median(ms):7.1f} ms  "
        f"p99={p99:7.1f} ms  max={ms[-1]:7.1f} ms"
    )


async def run(url: str, clients: int, logins: int, starts: int, max_s: float) -> None:
    deadline = time.monotonic() + max_s
    async with aiohttp.ClientSession(url) as http:

        async def login(nickname: str) -> tuple[float, dict[str, Any]]:
            started = time.perf_counter()
            async with http.post("/api/login/", json={"nickname": nickname, "pin": PIN}) as r:
                body = await r.json()
                assert r.status == 200, body
            return time.perf_counter() - started, body

        login_s: list[float] = []

        async def login_client(i: int) -> None:
            for _ in range(logins // clients):
                if time.monotonic() > deadline:
                    return
                elapsed, _ = await login(f"s{i:02d}")
                login_s.append(elapsed)

        await asyncio.gather(*(login_client(i) for i in range(clients)))
        print(summary("POST /api/login/", login_s))

        _, teacher = await login("teacher")
        headers = {"Authorization": f"Bearer {teacher['token']}"}
        async with http.get("/api/sessions/?limit=500", headers=headers) as r:
            ids = [s["id"] for s in (await r.json())["sessions"]]
        start_s: list[float] = []
        pause_s: list[float] = []

        async def command(path: str, sid: str) -> float:
            started = time.perf_counter()
            async with http.post(path, json={"session_id": sid}, headers=headers) as r:
                body = await r.json()
                assert r.status == 200, body
            return time.perf_counter() - started

        async def start_client(sid: str) -> None:
            for _ in range(starts // clients):
                if time.monotonic() > deadline:
                    return
                start_s.append(await command("/api/session/start/", sid))
                pause_s.append(await command("/api/session/pause/", sid))

        await asyncio.gather(*(start_client(sid) for sid in ids[:clients]))
        print(summary("POST /api/session/start/", start_s))
        print(summary("POST /api/session/pause/", pause_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--logins", type=int, default=200, help="total logins")
    parser.add_argument("--starts", type=int, default=400, help="total starts")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vrlms-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        settings = Settings(data_dir=data_dir)
        data_dir.mkdir(parents=True)
        migrate.upgrade(settings.database_url_resolved, settings.sqlite_path)
        asyncio.run(seed(data_dir, args.clients))
        proc, url = spawn(data_dir)
        try:
            print(f"server {url}, {args.clients} concurrent clients, cpus={os.cpu_count()}")
            asyncio.run(run(url, args.clients, args.logins, args.starts, args.max_seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
