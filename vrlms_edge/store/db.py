"""The database handle: async engine, SQLite pragmas, read sessions and serialized writes.

SQLite allows one writer at a time. Writers in this process queue on an asyncio lock and use
a dedicated connection whose transactions open with BEGIN IMMEDIATE, so a write never fails
with "database is locked"; other processes (a CLI backup, say) are waited for through
busy_timeout. On PostgreSQL, writes run concurrently and the database arbitrates.

Hot paths (teacher commands, event batches, admitting a headset) use `write_raw`/`read_raw`
instead: their whole transaction runs as one call on a writer (reader) thread with its own
sqlite3 connection (store/raw.py), writes behind the same lock, so it costs one thread round
trip instead of one per statement. A teacher command, a transaction of a few statements on
the way to every headset, skips even that round trip when it can (`write_raw(on_loop=True)`),
and the queue too: it runs at once whenever no transaction of this process is open, even while
the lock is still held by a writer whose transaction ended and whose task has not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

BUSY_TIMEOUT_MS: Final = 30_000
# The hot write lane's own page cache, in KiB: one event batch dirties a leaf page per headset
# in each index keyed by device or user, plus the new table pages (about 1,500 pages at 300
# headsets x 5,000 events). SQLite's default 2 MiB cache spilled those dirty pages into the WAL
# mid-transaction and read them back (two thirds of the writer's CPU was system calls).
WRITER_CACHE_KIB: Final = 16 * 1024
# The hot write lane never checkpoints the WAL itself. By default the commit that takes the WAL
# past 1000 pages copies them into the database file and fsyncs it: 5 ms here (and far more on
# a mini-PC's eMMC) inside one teacher command in every hundred or so, the slowest deliveries
# of a lesson. A checkpoint thread does it instead, PASSIVE (it never blocks the writer or a
# reader): at least CHECKPOINT_DELAY_S after a write, in a pause of CHECKPOINT_GAP_S without
# one, so that its copying and fsync fall between a class's commands rather than inside one;
# writes that never pause postpone it by CHECKPOINT_MAX_WAIT_S at most.
CHECKPOINT_DELAY_S: Final = 1.0
CHECKPOINT_GAP_S: Final = 0.02
CHECKPOINT_MAX_WAIT_S: Final = 2.0
T = TypeVar("T")
log = logging.getLogger(__name__)


class Database:
    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL") -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = create_async_engine(url, pool_size=8, max_overflow=8)
            self.write_engine = create_async_engine(url, pool_size=1, max_overflow=0)
            _install_sqlite_pragmas(self.engine, sqlite_synchronous, begin="BEGIN")
            _install_sqlite_pragmas(self.write_engine, sqlite_synchronous, begin="BEGIN IMMEDIATE")
        else:
            self.engine = create_async_engine(
                url, pool_size=10, max_overflow=20, pool_pre_ping=True
            )
            self.write_engine = self.engine
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock()
        # The lock's holder has its transaction open (from taking the lock until its COMMIT or
        # ROLLBACK; a writer-thread transaction clears it on that thread as it ends). One holder
        # at a time, so one flag; the loop only reads it.
        self._transaction_open = False
        self._sqlite_synchronous = sqlite_synchronous
        self._raw_path = make_url(url).database if self.is_sqlite else None
        # The writer's statements each touch a bounded set of pages, so their statement
        # journals (an in-transaction multi-row INSERT keeps one) live in memory instead of a
        # temp file written page by page; the readers keep file-backed temp storage for sorts.
        self._raw_writer = _RawLane(
            "sqlite-writer",
            "BEGIN IMMEDIATE",
            pragmas=(
                f"cache_size=-{WRITER_CACHE_KIB}",
                "temp_store=MEMORY",
                "wal_autocheckpoint=0",
            ),
        )
        # The writer for write_raw(on_loop=True), used from the event loop's thread (never
        # its own): it never waits for a lock, and leaves checkpoints to the checkpointer too.
        self._loop_writer = _RawLane(
            "sqlite-loop-writer",
            "BEGIN IMMEDIATE",
            pragmas=("temp_store=MEMORY", "wal_autocheckpoint=0"),
            busy_timeout_ms=0,
        )
        self._raw_reader = _RawLane("sqlite-reader", "BEGIN")
        self._checkpointer = _RawLane("sqlite-checkpoint", None)
        self._checkpoint_due = False  # one is scheduled and has not started
        self._checkpoints: set[asyncio.Task[None]] = set()  # scheduled or running
        self._last_write_end = 0.0  # loop time
        # (frames in the WAL, frames of it now in the database file) after the last checkpoint
        self.last_checkpoint: tuple[int, int] | None = None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads (its own snapshot; nothing is committed)."""
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block ends, rolled back on error."""
        if not self.is_sqlite:
            async with self._write_sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock:
            self._transaction_open = True
            try:
                async with self._write_sessions() as session, session.begin():
                    yield session
            finally:
                self._transaction_open = False

    async def write_raw(
        self, work: Callable[[sqlite3.Connection], T], *, on_loop: bool = False
    ) -> T:
        """Run `work(conn)` as one write transaction on the writer thread (SQLite only):
        committed when it returns, rolled back when it raises.

        `on_loop`: `work` is short (well under a millisecond); run it on the event loop's own
        thread when the database is free. The two thread switches of a round trip cost a
        teacher command 0.2-0.3 ms here at a class's pace (an idle core wakes cold for each).
        Only the BEGIN could wait, for another process's write, and it does not: this
        connection never waits for a lock, so a busy database sends `work` to the writer
        thread as usual, which waits there (busy_timeout). Nor does it queue for the lock
        while no transaction is open: it runs to its end before any other task does, and an
        event batch that has committed on the writer thread may hold the lock for another
        0.3-0.7 ms, until its task runs again among a class's frames."""
        if on_loop and not self._transaction_open and (done_now := self._write_on_loop(work)):
            return done_now[0]
        async with self._write_lock:
            if on_loop and (done_now := self._write_on_loop(work)):
                return done_now[0]
            done = self._write_on_thread(work)
            try:
                return await asyncio.shield(done)
            finally:
                if not done.done():  # cancelled: keep the lock until the transaction ended
                    await asyncio.wait([done])
                self._wrote()

    def _write_on_loop(self, work: Callable[[sqlite3.Connection], T]) -> tuple[T] | None:
        """`work` in a transaction on this thread, answered as (result,); None when the
        database is locked."""
        began = self._loop_writer.try_begin(*self._raw_target())
        if began is None:
            return None
        try:
            return (_finish(began, work),)
        finally:
            self._wrote()

    def _write_on_thread(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """`work` in a transaction on the writer thread, the lock held: the transaction counts
        as open until it ended there."""
        path, synchronous = self._raw_target()
        lane = self._raw_writer
        self._transaction_open = True

        def transaction() -> T:
            try:
                return lane.run(path, synchronous, work)
            finally:
                self._transaction_open = False

        return lane.call(transaction)

    def open_loop_writer(self) -> None:
        """Open the connection of write_raw(on_loop=True) now (at start-up) rather than in
        the first teacher command: opening it and reading the schema take 1.5 ms here. A
        locked database leaves it to the first use."""
        if self._raw_path is not None:
            self._loop_writer.open_here(self._raw_path, self._sqlite_synchronous)

    def _wrote(self) -> None:
        """After a raw write: note its end, and schedule the checkpoint it leaves out."""
        self._last_write_end = asyncio.get_running_loop().time()
        if not self._checkpoint_due:
            self._checkpoint_due = True
            task = asyncio.create_task(self._checkpoint_later(), name="sqlite-checkpoint")
            self._checkpoints.add(task)
            task.add_done_callback(self._checkpoints.discard)

    async def _checkpoint_later(self) -> None:
        """The WAL checkpoint the hot write lane leaves out, once for all raw writes until it
        runs (see CHECKPOINT_DELAY_S)."""
        try:
            await asyncio.sleep(CHECKPOINT_DELAY_S)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CHECKPOINT_MAX_WAIT_S
            while (now := loop.time()) < deadline:
                quiet = now - self._last_write_end
                if quiet >= CHECKPOINT_GAP_S and not self._write_lock.locked():
                    break
                pause_ends = max(CHECKPOINT_GAP_S - quiet, CHECKPOINT_GAP_S / 4)
                await asyncio.sleep(min(pause_ends, deadline - now))
        finally:
            self._checkpoint_due = False  # a write from now on schedules the next one
        try:
            self.last_checkpoint = wal_frames, copied = await self._raw_call(
                self._checkpointer, _checkpoint
            )
            if copied == wal_frames:
                # The first commit after a complete checkpoint starts the WAL over, writing
                # and fsyncing its header (new salts must be on disk before frames follow):
                # 0.5 ms inside whichever teacher command came next. A one-page commit here,
                # in the same pause, pays it instead (and schedules no checkpoint).
                async with self._write_lock:
                    await self._write_on_thread(_restart_wal)
        except sqlite3.Error:  # retried after the next write; a busy database is no error
            log.warning("WAL checkpoint failed", exc_info=True)

    async def read_raw(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` in one read transaction (one snapshot) on the reader thread."""
        return await self._raw_call(self._raw_reader, work)

    def _raw_call(
        self, lane: _RawLane, work: Callable[[sqlite3.Connection], T]
    ) -> asyncio.Future[T]:
        path, synchronous = self._raw_target()
        return lane.call(lambda: lane.run(path, synchronous, work))

    def _raw_target(self) -> tuple[str, str]:
        if self._raw_path is None:
            raise RuntimeError("the raw lanes need SQLite")
        return self._raw_path, self._sqlite_synchronous

    async def dispose(self) -> None:
        for task in list(self._checkpoints):  # (a running one's lane call finishes first)
            task.cancel()
        await asyncio.gather(*self._checkpoints, return_exceptions=True)
        # (the last connection to close checkpoints the whole WAL)
        self._loop_writer.close_here()
        for lane in (self._raw_writer, self._raw_reader, self._checkpointer):
            await lane.close()
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


def _install_sqlite_pragmas(engine: AsyncEngine, synchronous: str, *, begin: str) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the driver so that BEGIN IMMEDIATE is ours to issue.
        dbapi_conn.isolation_level = None
        _apply_pragmas(dbapi_conn, synchronous)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)


def _apply_pragmas(
    dbapi_conn: Any, synchronous: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.close()


def _restart_wal(conn: sqlite3.Connection) -> None:
    """A commit that changes nothing but writes a page: the header's user_version, unused,
    set to what it is."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    conn.execute(f"PRAGMA user_version = {int(version)}")


def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    _busy, wal_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return wal_frames, checkpointed


_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]]


class _RawLane:
    """One thread with its own sqlite3 connection, running whole transactions (or, with
    `begin` None, statements that must run outside one). Its own thread and queue rather than
    a ThreadPoolExecutor: a round trip from the event loop and back costs 70 us instead of 115
    (the executor's work item, its future and the chaining of that to the loop's)."""

    def __init__(
        self,
        name: str,
        begin: str | None,
        pragmas: tuple[str, ...] = (),
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> None:
        self._name = name
        self._begin = begin
        self._pragmas = pragmas
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """Run `work()` on the lane's thread; the future completes on the calling loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            # A daemon: a process that never disposes its database still exits (an
            # interrupted transaction is rolled back by SQLite).
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put((loop, future, work))
        return future

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, work = job
            try:
                outcome: tuple[Any, BaseException | None] = (work(), None)
            except BaseException as exc:  # handed to the caller, whatever it is
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, future, *outcome)

    def _connection(self, path: str, synchronous: str) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            _apply_pragmas(conn, synchronous, self._busy_timeout_ms)
            for pragma in self._pragmas:
                conn.execute(f"PRAGMA {pragma}")
            self._conn = conn
        return conn

    def run(self, path: str, synchronous: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """On the lane's thread: `work(conn)` in a transaction."""
        conn = self._connection(path, synchronous)
        if self._begin is None:
            return work(conn)
        conn.execute(self._begin)
        return _finish(conn, work)

    def try_begin(self, path: str, synchronous: str) -> sqlite3.Connection | None:
        """On the calling thread: begin a transaction on the lane's connection and answer it;
        None when that failed (with busy_timeout 0: the database is locked)."""
        assert self._begin is not None
        try:
            conn = self._connection(path, synchronous)
            conn.execute(self._begin)
        except sqlite3.OperationalError:
            return None
        return conn

    def open_here(self, path: str, synchronous: str) -> None:
        """Open the connection on the calling thread (used only through try_begin) and read
        the schema into it; nothing when the database is locked."""
        with contextlib.suppress(sqlite3.OperationalError):
            conn = self._connection(path, synchronous)
            conn.execute("SELECT name FROM sqlite_schema LIMIT 1").fetchall()

    def close_here(self) -> None:
        """Close the connection on the calling thread (a lane used only through try_begin)."""
        self._close_connection()

    async def close(self) -> None:
        """Close the connection on the lane's thread, then end the thread."""
        if self._thread is None:
            return
        await self.call(self._close_connection)
        self._jobs.put(None)
        self._thread = None

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _finish(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work(conn)` in the transaction just begun: committed, or rolled back if it raises."""
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
