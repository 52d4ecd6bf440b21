"""Org server test parts (pytest plugin, see tests/conftest.py): a throwaway PostgreSQL
cluster, the org server on it, and a small org world (people, catalog, a class) to sync.

One cluster per test session, started with initdb + pg_ctl on a free loopback port under a
temporary directory (as the `postgres` user when tests run as root), with a template database
migrated once; each test gets a fresh database copied from that template (fast).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import RunningBox, cli_env, need, start_box, test_settings
from vrlms_edge.cloud.app import create_cloud_app
from vrlms_edge.cloud.orgs import create_org, issue_enrollment_token
from vrlms_edge.commands.serve import listening_urls
from vrlms_edge.config import Settings
from vrlms_edge.keys import CLOCK, DB, SETTINGS
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    Class,
    Course,
    Enrollment,
    Lesson,
    Module,
    Org,
    Result,
    ResultStatus,
    Role,
    User,
)
from vrlms_edge.sync.enrollment import enroll
from vrlms_edge.sync.outbox import enqueue_rows
from vrlms_edge.sync.worker import sync_once

TEMPLATE = "vrlms_template"


def _bindir() -> Path | None:
    for version in ("17", "16", "15", "14"):
        path = Path(f"/usr/lib/postgresql/{version}/bin")
        if (path / "initdb").exists():
            return path
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgCluster:
    port: int
    root: Path
    bindir: Path

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    async def execute(self, sql: str, database: str = "postgres") -> None:
        import asyncpg

        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database=database
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        await self.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
        return self.url(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def start_cluster() -> PgCluster:
    """Start a throwaway cluster (initdb + pg_ctl) with the migrated template database.
    Raises RuntimeError when PostgreSQL is not installed or does not start."""
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        raise RuntimeError("runuser (to start PostgreSQL as postgres) is missing")
    root = Path(tempfile.mkdtemp(prefix="vrlms-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    subprocess.run(
        _as_postgres([*initdb, "-E", "UTF8", "--no-sync"]), check=True, capture_output=True
    )
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
    started = subprocess.run(
        _as_postgres([*pg_ctl, "-o", options, "-l", str(root / "log"), "-w", "-t", "30", "start"]),
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr} {log[-2000:]}")
    cluster = PgCluster(port=port, root=root, bindir=bindir)
    try:
        asyncio.run(cluster.execute(f"CREATE DATABASE {TEMPLATE}"))
        migrate.upgrade(cluster.url(TEMPLATE), None)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: PgCluster) -> None:
    subprocess.run(
        _as_postgres(
            [
                str(cluster.bindir / "pg_ctl"),
                "-D",
                str(cluster.root / "data"),
                "-m",
                "immediate",
                "stop",
            ]
        ),
        capture_output=True,
    )
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    need(_bindir() is not None, "PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        need(False, "asyncpg is not installed")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
async def pg_url(pg_cluster: PgCluster) -> str:
    return await pg_cluster.new_database()


# --- the org server on that cluster ------------------------------------------------------------


@dataclass
class RunningCloud:
    app: web.Application
    runner: web.AppRunner
    url: str
    http: aiohttp.ClientSession

    @property
    def db(self) -> Database:
        return self.app[DB]


async def start_cloud(settings: Settings) -> RunningCloud:
    app = create_cloud_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = listening_urls(runner)[0]
    return RunningCloud(app=app, runner=runner, url=url, http=aiohttp.ClientSession(url))


async def stop_cloud(cloud: RunningCloud) -> None:
    await cloud.http.close()
    await cloud.runner.cleanup()


@pytest.fixture
async def cloud(pg_url: str, tmp_path: Path) -> AsyncIterator[RunningCloud]:
    running = await start_cloud(test_settings(tmp_path / "cloud", database_url=pg_url))
    try:
        yield running
    finally:
        await stop_cloud(running)


# --- an org to sync ----------------------------------------------------------------------------


@dataclass
class World:
    org: Org
    teacher: User
    students: list[User]
    lessons: list[Lesson]
    klass: Class


async def seed_org(db: Database, slug: str, *, students: int = 3) -> World:
    """An org with a teacher, students, a course of two lessons and a class (no hashing:
    these users never log in)."""
    org = await create_org(db, slug, f"School {slug}")
    async with db.write() as s:
        teacher = User(org_id=org.id, role=Role.teacher, nickname="teach", display_name="T")
        people = [
            User(org_id=org.id, role=Role.student, nickname=f"s{i}", display_name=f"S {i}")
            for i in range(students)
        ]
        course = Course(org_id=org.id, title="Planets")
        s.add_all([teacher, *people, course])
        await s.flush()
        module = Module(org_id=org.id, course_id=course.id, title="Inner")
        s.add(module)
        await s.flush()
        lessons = [
            Lesson(org_id=org.id, module_id=module.id, title=f"L{i}", apk_package="com.x")
            for i in range(2)
        ]
        klass = Class(org_id=org.id, name="5A", teacher_id=teacher.id)
        s.add_all([*lessons, klass])
        await s.flush()
        s.add_all([Enrollment(org_id=org.id, class_id=klass.id, user_id=p.id) for p in people])
    return World(org=org, teacher=teacher, students=people, lessons=lessons, klass=klass)


async def token_for(db: Database, org_id: str) -> str:
    token, _ = await issue_enrollment_token(db, org_id, now=ServerClock().now())
    return token


async def make_results(db: Database, world: World, count: int, *, score: float = 0.5) -> list[str]:
    """`count` results authored on the box (as tracking would), queued for the org server."""
    rows = []
    async with db.write() as s:
        for i in range(count):
            row = Result(
                org_id=world.org.id,
                user_id=world.students[i % len(world.students)].id,
                lesson_id=world.lessons[(i // len(world.students)) % len(world.lessons)].id,
                session_id=None,
                status=ResultStatus.completed,
                progress=1.0,
                score=score + i / 10_000,
                time_spent_ms=1000 + i,
            )
            rows.append(row)
        s.add_all(rows)
        await enqueue_rows(s, rows)
        ids = [r.id for r in rows]
    return ids


def result_content(r: Result) -> tuple[object, ...]:
    return (r.id, r.user_id, r.lesson_id, r.status, r.progress, r.score, r.time_spent_ms)


async def enrolled_box(cloud: RunningCloud, world: World, data_dir: Path) -> RunningBox:
    """A box (in-process, sync worker off: tests drive sync_once) enrolled in world's org."""
    box = await start_box(test_settings(data_dir, sync_worker=False))
    token = await token_for(cloud.db, world.org.id)
    await enroll(box.app[DB], box.app[CLOCK], data_dir, cloud.url, token)
    # First sync: the box gets its roster and catalog.
    await sync_once(box.app[DB], box.app[SETTINGS], box.app[CLOCK])
    return box


@dataclass
class CloudProcess:
    proc: subprocess.Popen[str]
    url: str


def spawn_cloud(database_url: str, data_dir: Path, port: int = 0) -> CloudProcess:
    """A real `vrlms-edge cloud serve` process (for kill -9 tests and the benchmark)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vrlms_edge",
            "--data-dir",
            str(data_dir),
            "cloud",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(VRLMS_DATABASE_URL=database_url, VRLMS_LOG_LEVEL="WARNING"),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"cloud serve did not start: {line!r}")
    return CloudProcess(proc=proc, url=line.split()[-1])
