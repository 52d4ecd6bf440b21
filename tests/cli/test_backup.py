"""`vrlms-edge backup FILE` while the database is being written, and `restore FILE`."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import sys
from pathlib import Path

from sqlalchemy import select

from tests.conftest import cli_env, run_cli, spawn_serve
from vrlms_edge.domain import roster
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Course, Module, SyncState

WRITERS = 20
# About 12 MiB of catalog text: the backup then takes several steps of pages.
FILLER_ROWS = 1500
FILLER_TEXT = "x" * 8000


def _consistent_counts(path: Path, *, single_file: bool = False) -> tuple[int, int, int]:
    """(courses written by writers, modules, the writers' counter) in one snapshot."""
    if single_file:
        assert not path.with_name(path.name + "-wal").exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        courses = conn.execute("SELECT count(*) FROM courses WHERE title LIKE 'w-%'").fetchone()
        modules = conn.execute("SELECT count(*) FROM modules").fetchone()
        counter = conn.execute("SELECT value FROM sync_state WHERE name='writes'").fetchone()
    return courses[0], modules[0], json.loads(counter[0])["n"] if counter else 0


async def _write_once(db: Database, org_id: str, writer: int, n: int) -> None:
    """One transaction: a course, its module and the counter move together."""
    async with db.write() as s:
        course = Course(org_id=org_id, title=f"w-{writer}-{n}")
        s.add(course)
        await s.flush()
        s.add(Module(org_id=org_id, course_id=course.id, title="m"))
        counter = await s.get(SyncState, "writes")
        if counter is None:
            s.add(SyncState(name="writes", value={"n": 1}))
        else:
            counter.value = {"n": counter.value["n"] + 1}


async def test_backup_under_20_writers_restores_a_consistent_database(
    tmp_path: Path, migrated_template: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = data_dir / "vrlms.sqlite3"
    shutil.copyfile(migrated_template, database)
    db = Database(f"sqlite+aiosqlite:///{database}")
    org_id = (await roster.get_or_create_org(db, "school", "School")).id
    async with db.write() as s:
        s.add_all(
            Course(org_id=org_id, title=f"filler {i}", description=FILLER_TEXT)
            for i in range(FILLER_ROWS)
        )
    stop = asyncio.Event()
    written = [0] * WRITERS

    async def writer(k: int) -> None:
        while not stop.is_set():
            await _write_once(db, org_id, k, written[k])
            written[k] += 1

    tasks = [asyncio.create_task(writer(k)) for k in range(WRITERS)]
    try:
        await asyncio.sleep(0.2)
        before = sum(written)
        backup_file = tmp_path / "backup.sqlite3"
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "vrlms_edge", "--data-dir", str(data_dir)),
            *("backup", str(backup_file)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(),
        )
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        during = sum(written) - before
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    async with db.read() as s:
        total = len((await s.execute(select(Module.id))).all())
    await db.dispose()
    assert proc.returncode == 0, err.decode()
    assert "backup:" in err.decode() and "MiB" in err.decode()
    assert during > 0, "the writers must have written while the backup ran"

    # The backup is one file, at one point in time between start and end of the writes.
    courses, modules, counter = _consistent_counts(backup_file, single_file=True)
    assert courses == modules == counter
    assert before <= counter <= total

    # Restored into another box, it is that same point in time.
    other = tmp_path / "other"
    restored = run_cli(other, "restore", str(backup_file))
    assert restored.returncode == 0, restored.stderr
    assert _consistent_counts(other / "vrlms.sqlite3") == (courses, modules, counter)
    with sqlite3.connect(other / "vrlms.sqlite3") as conn:
        fillers = conn.execute("SELECT count(*) FROM courses WHERE title LIKE 'filler%'")
        assert fillers.fetchone()[0] == FILLER_ROWS


def test_restore_checks_the_file_keeps_the_old_database_and_waits_for_serve(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    assert run_cli(data_dir, "import-roster", "-", stdin=ROSTER).returncode == 0
    backup_file = tmp_path / "roster.sqlite3"
    assert run_cli(data_dir, "backup", str(backup_file)).returncode == 0

    junk = tmp_path / "junk.sqlite3"
    junk.write_text("not a database at all")
    refused = run_cli(data_dir, "restore", str(junk))
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"vrlms-edge: {junk} is not an SQLite database"
    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    refused = run_cli(data_dir, "restore", str(foreign))
    assert refused.returncode == 1 and "not a vrlms-edge database" in refused.stderr

    served = spawn_serve(data_dir)
    try:
        busy = run_cli(data_dir, "restore", str(backup_file))
        assert busy.returncode == 1 and "in use by a running vrlms-edge (serve, pid" in busy.stderr
        second = run_cli(data_dir, "serve", "--host", "127.0.0.1", "--port", "0")
        assert second.returncode == 1 and "in use by a running vrlms-edge" in second.stderr
    finally:
        served.proc.terminate()
        served.proc.communicate(timeout=10)

    # More data after the backup; the restore brings back the backup's state.
    assert (
        run_cli(data_dir, "users", "add", "late", "--role", "student", "--pin", "1111").returncode
        == 0
    )
    restored = run_cli(data_dir, "restore", str(backup_file))
    assert restored.returncode == 0, restored.stderr
    with sqlite3.connect(data_dir / "vrlms.sqlite3") as conn:
        nicknames = {r[0] for r in conn.execute("SELECT nickname FROM users")}
    assert nicknames == {"anna", "ben"}
    aside = [p for p in data_dir.iterdir() if ".pre-restore-" in p.name and p.name[-4] != "-"]
    kept = [p for p in aside if p.name.endswith(tuple("0123456789Z"))]
    assert len(kept) == 1
    with sqlite3.connect(kept[0]) as conn:
        assert "late" in {r[0] for r in conn.execute("SELECT nickname FROM users")}


ROSTER = (
    "class,nickname,display_name,role,pin,device_id\n"
    "7A,anna,Anna,student,1001,\n"
    "7A,ben,Ben,student,1002,\n"
)
