"""store/raw.py and Database.write_raw: rows written on the hot lane read back through the ORM
exactly as the ORM writes them (and the other way round); the lane's transactions commit,
roll back and queue behind ORM writes like any other."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from tests.live.support import eventually
from vrlms_edge.domain import roster
from vrlms_edge.store import db as db_module
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Course, Lesson, Module, SyncState
from vrlms_edge.store.raw import RawTable

LESSONS = RawTable(Lesson)
STATE = RawTable(SyncState)


async def _module(db: Database) -> tuple[str, str]:
    org_id = (await roster.get_or_create_org(db, "school", "School")).id
    async with db.write() as s:
        course = Course(org_id=org_id, title="Biology")
        s.add(course)
        await s.flush()
        module = Module(org_id=org_id, course_id=course.id, title="Cells")
        s.add(module)
        await s.flush()
        return org_id, module.id


async def test_a_row_inserted_raw_reads_back_through_the_orm(database: Database) -> None:
    org_id, module_id = await _module(database)
    when = datetime(2026, 11, 27, 9, 30, 15, 123456, tzinfo=UTC)
    row = Lesson(
        org_id=org_id,
        module_id=module_id,
        title="Mitosis",
        apk_package="org.example.cells",
        launch={"scene": "mitosis", "lang": "fi"},
        deleted_at=when,
    )
    await database.write_raw(lambda conn: LESSONS.insert(conn, row))
    assert row.id and row.created_at and row.position == 0  # the model's defaults filled in
    async with database.read() as s:
        stored = await s.get(Lesson, row.id)
    assert stored is not None
    assert LESSONS.snapshot(stored) == LESSONS.snapshot(row)
    assert stored.deleted_at == when and stored.launch == {"scene": "mitosis", "lang": "fi"}


async def test_values_inserted_raw_read_back_as_the_orm_row_with_defaults(
    database: Database,
) -> None:
    org_id, module_id = await _module(database)
    values = {"org_id": org_id, "module_id": module_id, "title": "Mitosis", "apk_package": "a.b"}
    await database.write_raw(lambda conn: LESSONS.insert_values(conn, values))
    assert values["id"] and values["position"] == 0  # the model's defaults, filled in
    async with database.read() as s:
        stored = await s.get(Lesson, values["id"])
    assert stored is not None
    assert stored.title == "Mitosis" and stored.position == 0 and stored.launch == {}
    assert stored.created_at == values["created_at"] and stored.deleted_at is None


async def test_an_orm_row_reads_back_raw_and_updates_only_what_changed(database: Database) -> None:
    org_id, module_id = await _module(database)
    async with database.write() as s:
        orm_row = Lesson(org_id=org_id, module_id=module_id, title="Mitosis", apk_package="a.b")
        s.add(orm_row)
    async with database.read() as s:
        written = await s.get(Lesson, orm_row.id)
    assert written is not None

    def rename(conn: sqlite3.Connection) -> tuple[bool, bool]:
        row = LESSONS.get(conn, orm_row.id)
        assert row is not None and LESSONS.snapshot(row) == LESSONS.snapshot(written)
        before = LESSONS.snapshot(row)
        unchanged = LESSONS.update(conn, row, before)
        row.title = "Meiosis"
        return unchanged, LESSONS.update(conn, row, before)

    assert await database.write_raw(rename) == (False, True)
    async with database.read() as s:
        renamed = await s.get(Lesson, orm_row.id)
    assert renamed is not None and renamed.title == "Meiosis"
    assert renamed.updated_at > written.updated_at  # onupdate stamped as the ORM would
    assert renamed.created_at == written.created_at


async def test_upsert_inserts_then_replaces_the_listed_columns(database: Database) -> None:
    for n in (1, 2):
        row = {"name": "counter", "value": {"n": n}, "updated_at": datetime.now(UTC)}
        await database.write_raw(
            lambda conn, row=row: STATE.upsert(conn, [row], conflict=("name",), update=("value",))
        )
    async with database.read() as s:
        counter = await s.get(SyncState, "counter")
    assert counter is not None and counter.value == {"n": 2}


async def test_a_failing_transaction_leaves_nothing(database: Database) -> None:
    org_id, module_id = await _module(database)

    def half_then_fail(conn: sqlite3.Connection) -> None:
        LESSONS.insert(conn, Lesson(org_id=org_id, module_id=module_id, title="x", apk_package="y"))
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await database.write_raw(half_then_fail)
    async with database.read() as s:
        assert (await s.get(Module, module_id)) is not None
        assert list(await s.scalars(Lesson.__table__.select())) == []


async def test_raw_and_orm_writers_queue_behind_each_other(database: Database) -> None:
    """Interleaved read-modify-write of one counter from both lanes: no lost update, no
    "database is locked"."""
    async with database.write() as s:
        s.add(SyncState(name="n", value={"n": 0}))

    def bump_raw(conn: sqlite3.Connection) -> None:
        row = STATE.get(conn, "n")
        assert row is not None
        before = STATE.snapshot(row)
        row.value = {"n": row.value["n"] + 1}
        STATE.update(conn, row, before)

    async def bump_orm() -> None:
        async with database.write() as s:
            row = await s.get(SyncState, "n")
            assert row is not None
            row.value = {"n": row.value["n"] + 1}

    work = [database.write_raw(bump_raw) if i % 2 else bump_orm() for i in range(60)]
    await asyncio.gather(*work)
    async with database.read() as s:
        counter = await s.get(SyncState, "n")
    assert counter is not None and counter.value == {"n": 60}


async def test_where_reads_rows_as_the_orm_does(database: Database) -> None:
    org_id, module_id = await _module(database)
    async with database.write() as s:
        rows = [
            Lesson(org_id=org_id, module_id=module_id, title=t, apk_package="a.b", launch={"n": i})
            for i, t in enumerate(("Mitosis", "Meiosis", "Osmosis"))
        ]
        s.add_all(rows)
    found = await database.write_raw(
        lambda conn: LESSONS.where(conn, "title IN (?, ?) ORDER BY title", ["Mitosis", "Osmosis"])
    )
    assert [r.title for r in found] == ["Mitosis", "Osmosis"]
    async with database.read() as s:
        for row in found:
            stored = await s.get(Lesson, row.id)
            assert stored is not None and LESSONS.snapshot(stored) == LESSONS.snapshot(row)


async def test_upsert_of_many_rows_spans_every_statement_shape(database: Database) -> None:
    """1,371 rows = 1024 + 5 x 64 + 16 + 2 x 4 + 3 x 1: every row lands once, and a second
    upsert replaces the listed column of every row."""
    count = 1024 + 5 * 64 + 16 + 2 * 4 + 3
    when = datetime(2026, 11, 27, tzinfo=UTC)
    for n in (1, 2):
        rows = [
            {"name": f"k{i}", "value": {"n": n, "i": i}, "updated_at": when} for i in range(count)
        ]
        await database.write_raw(
            lambda conn, rows=rows: STATE.upsert(conn, rows, conflict=("name",), update=("value",))
        )
    async with database.read() as s:
        stored = {r.name: r.value for r in await s.scalars(select(SyncState))}
    assert stored == {f"k{i}": {"n": 2, "i": i} for i in range(count)}


def _hold_checkpoint_lane(database: Database) -> tuple[threading.Event, asyncio.Future[bool]]:
    """Occupy the checkpoint lane until the event is set (a checkpoint queues behind)."""
    gate = threading.Event()
    return gate, database._raw_call(database._checkpointer, lambda _conn: gate.wait(10))


async def test_wal_checkpoints_run_after_raw_writes_never_inside_them(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit of the hot lane never copies the WAL into the database (its fsync would stall
    a teacher's command); the checkpoint thread does, shortly after."""
    monkeypatch.setattr(db_module, "CHECKPOINT_DELAY_S", 0.05)

    def autocheckpoint(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    assert await database.write_raw(autocheckpoint) == 0
    # The checkpoint lane waits behind this gate until all writes are in, however slow the
    # disk: then exactly one checkpoint sees the whole WAL.
    gate, gated = _hold_checkpoint_lane(database)
    # About 1,500 pages of 4 KiB: past SQLite's default autocheckpoint of 1,000 pages.
    for batch in range(15):
        rows = [
            {"name": f"r{batch}-{i}", "value": {"x": "v" * 3500}, "updated_at": datetime.now(UTC)}
            for i in range(100)
        ]
        await database.write_raw(
            lambda conn, rows=rows: STATE.upsert(conn, rows, conflict=("name",), update=("value",))
        )
    assert database.last_checkpoint is None
    gate.set()
    assert await gated
    await eventually(lambda: database.last_checkpoint is not None, 5)
    assert database.last_checkpoint is not None
    wal_frames, copied = database.last_checkpoint
    assert wal_frames > 1000 and copied == wal_frames  # one checkpoint took all of it
    async with database.read() as s:
        assert (await s.get(SyncState, "r14-99")) is not None

    def wal_frames_now() -> int:
        with contextlib.closing(sqlite3.connect(make_url(database.url).database or "")) as conn:
            return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

    # The checkpoint task started the WAL over with a one-page commit of its own (the next
    # command need not write and fsync a new WAL header).
    await eventually(lambda: wal_frames_now() == 1, 5)


def _touch(conn: sqlite3.Connection) -> None:
    """One small raw write (a class's command, for the checkpoint's timing)."""
    row = {"name": "touched", "value": {"at": time.monotonic()}, "updated_at": datetime.now(UTC)}
    STATE.upsert(conn, [row], conflict=("name",), update=("value", "updated_at"))


async def test_a_checkpoint_waits_for_a_pause_in_the_writes(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands at 20 Hz never leave the writer alone for CHECKPOINT_GAP_S: the checkpoint
    (its copy and fsync) waits past its delay until they pause, however long that is within
    CHECKPOINT_MAX_WAIT_S."""
    monkeypatch.setattr(db_module, "CHECKPOINT_DELAY_S", 0.05)
    monkeypatch.setattr(db_module, "CHECKPOINT_GAP_S", 0.5)
    monkeypatch.setattr(db_module, "CHECKPOINT_MAX_WAIT_S", 60.0)
    for _ in range(20):  # a second of writes, 20 times the delay
        await database.write_raw(_touch)
        await asyncio.sleep(0.05)
        assert database.last_checkpoint is None
    await eventually(lambda: database.last_checkpoint is not None, 3)


async def test_writes_that_never_pause_postpone_a_checkpoint_by_max_wait_at_most(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "CHECKPOINT_DELAY_S", 0.05)
    monkeypatch.setattr(db_module, "CHECKPOINT_GAP_S", 60.0)  # no pause is ever long enough
    monkeypatch.setattr(db_module, "CHECKPOINT_MAX_WAIT_S", 0.3)
    for _ in range(60):  # 3 s of writes at most; the checkpoint is due after 0.35 s
        await database.write_raw(_touch)
        await asyncio.sleep(0.05)
        if database.last_checkpoint is not None:
            break
    assert database.last_checkpoint is not None


async def test_dispose_ends_a_checkpoint_under_way_and_leaves_no_lane_behind(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "CHECKPOINT_DELAY_S", 0.0)
    monkeypatch.setattr(db_module, "CHECKPOINT_GAP_S", 0.01)
    others = {t.ident for t in threading.enumerate()}  # (other tests' lanes, if any linger)
    gate, gated = _hold_checkpoint_lane(database)
    await database.write_raw(_touch)
    await asyncio.sleep(0.1)  # the checkpoint task waits behind the gate now
    disposing = asyncio.create_task(database.dispose())
    await asyncio.sleep(0.1)
    gate.set()
    await asyncio.wait_for(disposing, 10)
    assert await gated
    await asyncio.sleep(0.1)  # what a checkpoint task left running would do now
    lanes = [t.name for t in threading.enumerate() if t.ident not in others]
    assert [name for name in lanes if name.startswith("sqlite-")] == []


async def test_a_cancelled_caller_leaves_the_lanes_working_and_its_transaction_whole(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    started = threading.Event()

    def slow_write(conn: sqlite3.Connection) -> None:
        started.set()
        time.sleep(0.2)
        row = {"name": "slow", "value": {"n": 1}, "updated_at": datetime.now(UTC)}
        STATE.upsert(conn, [row], conflict=("name",), update=("value",))

    writer = asyncio.create_task(database.write_raw(slow_write))
    assert await asyncio.to_thread(started.wait, 5)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer  # ...only once the transaction it started has ended: committed
    reader = asyncio.create_task(database.read_raw(lambda conn: time.sleep(0.2)))
    await asyncio.sleep(0.05)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader

    def read_slow(conn: sqlite3.Connection) -> str:
        return str(conn.execute("SELECT value FROM sync_state WHERE name = 'slow'").fetchone()[0])

    assert json.loads(await database.read_raw(read_slow)) == {"n": 1}
    await asyncio.sleep(0.3)  # the cancelled read's outcome arrives, and is dropped quietly
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def _counted(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bump a counter row; answers (its value now, the thread that ran the transaction)."""
    found = STATE.get(conn, "n")
    n = (found.value["n"] if found is not None else 0) + 1
    row = {"name": "n", "value": {"n": n}, "updated_at": datetime.now(UTC)}
    STATE.upsert(conn, [row], conflict=("name",), update=("value",))
    return n, threading.get_ident()


async def test_an_on_loop_write_runs_on_the_loop_and_is_a_transaction_like_any(
    database: Database,
) -> None:
    loop_thread = threading.get_ident()
    assert await database.write_raw(_counted, on_loop=True) == (1, loop_thread)
    # Interleaved with the writer thread's transactions: no lost update.
    both = [database.write_raw(_counted, on_loop=bool(i % 2)) for i in range(20)]
    assert sorted(n for n, _ in await asyncio.gather(*both)) == list(range(2, 22))

    def autocheckpoint(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    assert await database.write_raw(autocheckpoint, on_loop=True) == 0  # the checkpointer's job

    def bump_then_fail(conn: sqlite3.Connection) -> None:
        _counted(conn)
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await database.write_raw(bump_then_fail, on_loop=True)
    assert (await database.write_raw(_counted, on_loop=True))[0] == 22


async def test_an_on_loop_write_waits_for_another_process_off_the_loop(
    database: Database,
) -> None:
    """Another process's write transaction (a CLI command, say) holds the database: the
    event loop must not wait for it, the write waits on the writer thread instead."""
    await database.write_raw(_counted)  # (the box has been running: the database is in WAL)
    other = sqlite3.connect(make_url(database.url).database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(database.write_raw(_counted, on_loop=True))
        started = time.monotonic()
        await asyncio.sleep(0.2)  # the loop runs meanwhile
        assert time.monotonic() - started < 1.0
        assert not write.done()
        other.execute("COMMIT")
        n, thread = await asyncio.wait_for(write, 10)
    finally:
        other.close()
    assert n == 2 and thread != threading.get_ident()
    # The next one, with the database free again, runs on the loop.
    assert await database.write_raw(_counted, on_loop=True) == (3, threading.get_ident())


async def test_the_on_loop_writer_opens_at_start_up_even_next_to_another_writer(
    database: Database,
) -> None:
    """`open_loop_writer` (called as the app starts) never fails the start, however locked
    the database is; the writes then run on the loop as always."""
    await database.write_raw(_counted)
    other = sqlite3.connect(make_url(database.url).database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        database.open_loop_writer()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await database.write_raw(_counted, on_loop=True) == (2, threading.get_ident())


async def test_an_on_loop_write_does_not_queue_behind_a_writer_whose_transaction_ended(
    database: Database,
) -> None:
    """A writer holds the lock until its task runs again, after its COMMIT on the writer
    thread (among a class's frames, 0.3-0.7 ms later): a teacher command goes ahead, the
    writer thread's next transaction still waits for the lock."""
    await database.write_raw(_counted)
    async with database._write_lock:  # that writer: its transaction is over
        command = database.write_raw(_counted, on_loop=True)
        assert await asyncio.wait_for(command, 1) == (2, threading.get_ident())
        queued = asyncio.create_task(database.write_raw(_counted))
        await asyncio.sleep(0.1)
        assert not queued.done()
    assert (await asyncio.wait_for(queued, 10))[0] == 3
