"""Backup and restore of the box's SQLite database.

Backup uses SQLite's online backup API: it is consistent while the box serves and writes,
because WAL readers never block the writer and each step reads one snapshot. It copies a
batch of pages per step so progress can be shown; when writers change the database between
steps SQLite restarts the copy, and after a few restarts the rest is taken in one step (one
read transaction, still without blocking writers). The copy is checked, switched to a single
self-contained file (journal_mode=DELETE) and renamed into place only when complete.

Restore checks a file is a vrlms-edge database (integrity_check, Alembic revision this
version knows), moves the current database aside with its WAL/SHM files, puts the copy in
place and migrates it to head. Blocking functions: call them from a worker thread or the CLI.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from vrlms_edge.store import migrate

# 4 MiB per step at SQLite's default 4 KiB page: a progress tick every few ms of copying.
PAGES_PER_STEP: Final = 1024
# Restarts tolerated (writers changed the source between steps) before one-step copying.
MAX_RESTARTS: Final = 3
# Waits for a writer holding the database (a checkpoint, say) rather than failing at once.
BUSY_TIMEOUT_MS: Final = 30_000
# Tables without which a file is not a vrlms-edge database.
REQUIRED_TABLES: Final = frozenset({"alembic_version", "orgs", "users", "box_identity"})

Progress = Callable[[int, int], None]


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why, in one line."""


@dataclass(slots=True)
class BackupResult:
    path: Path
    pages: int
    bytes: int
    restarts: int
    revision: str
    seconds: float


class _TooManyRestarts(Exception):
    pass


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _copy(source: Path, target: Path, progress: Progress | None) -> tuple[int, int]:
    """Online-backup `source` into a new file `target`; returns (pages, restarts)."""
    restarts = 0
    last_remaining: int | None = None
    pages = 0

    def step(_status: int, remaining: int, total: int) -> None:
        nonlocal restarts, last_remaining, pages
        if last_remaining is not None and remaining > last_remaining:
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise _TooManyRestarts
        last_remaining, pages = remaining, total
        if progress is not None:
            progress(total - remaining, total)

    src = _connect(source)
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            try:
                src.backup(dst, pages=PAGES_PER_STEP, progress=step)
            except _TooManyRestarts:
                # Busy writers: take the rest as one snapshot in one step.
                src.backup(dst, pages=-1)
                pages = src.execute("PRAGMA page_count").fetchone()[0]
                if progress is not None:
                    progress(pages, pages)
            if pages == 0:
                pages = src.execute("PRAGMA page_count").fetchone()[0]
            # A backup is one self-contained file, not a WAL database with side files.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    return pages, restarts


def check_database(path: Path) -> str:
    """The Alembic revision of a vrlms-edge database file; BackupError if it is not one
    (not SQLite, damaged, missing our tables, or made by a newer vrlms-edge)."""
    with path.open("rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise BackupError(f"{path} is not an SQLite database")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
            if problems != ["ok"]:
                raise BackupError(f"{path} is damaged: {problems[0]}")
            tables = {
                row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            missing = REQUIRED_TABLES - tables
            if missing:
                raise BackupError(
                    f"{path} is not a vrlms-edge database (no table {sorted(missing)[0]})"
                )
            revisions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: {exc}") from None
    if len(revisions) != 1:
        raise BackupError(f"{path} has no single schema revision ({revisions})")
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    try:
        known = script.get_revision(revisions[0])
    except CommandError:
        known = None
    if known is None:
        raise BackupError(
            f"{path} has schema revision {revisions[0]}, unknown to this vrlms-edge "
            "(made by a newer version?)"
        )
    return str(revisions[0])


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(source: Path, target: Path, progress: Progress | None = None) -> BackupResult:
    """A consistent copy of the live database `source` at `target` (replaced atomically)."""
    started = time.monotonic()
    if not source.exists():
        raise BackupError(f"no database at {source}")
    if target.resolve() == source.resolve():
        raise BackupError("the backup file must not be the database itself")
    if target.is_dir():
        raise BackupError(f"{target} is a directory")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        pages, restarts = _copy(source, partial, progress)
        revision = check_database(partial)
        _fsync(partial)
        partial.replace(target)
        _fsync_dir(target.parent.resolve())
    except sqlite3.Error as exc:
        raise BackupError(f"backup failed: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return BackupResult(
        path=target,
        pages=pages,
        bytes=target.stat().st_size,
        restarts=restarts,
        revision=revision,
        seconds=time.monotonic() - started,
    )


@dataclass(slots=True)
class RestoreResult:
    revision: str
    moved_aside: Path | None
    migrated: bool


def restore(
    backup_file: Path, database: Path, url: str, progress: Progress | None = None
) -> RestoreResult:
    """Replace `database` by the backup. The caller must hold the data dir's in-use lock
    (no server may have the database open). The old database is kept beside it as
    `<name>.pre-restore-<time>` (with its -wal/-shm), then the restored one is migrated."""
    if not backup_file.is_file():
        raise BackupError(f"no backup file at {backup_file}")
    if backup_file.resolve() == database.resolve():
        raise BackupError("the backup file is the database itself")
    database.parent.mkdir(parents=True, exist_ok=True)
    incoming = database.with_name(f".{database.name}.restoring")
    incoming.unlink(missing_ok=True)
    try:
        # Validate first (a bad file changes nothing), then copy through SQLite so a
        # backup left in WAL mode arrives whole.
        check_database(backup_file)
        _copy(backup_file, incoming, progress)
        revision = check_database(incoming)
        _fsync(incoming)
        moved = _move_aside(database)
        incoming.replace(database)
        _fsync_dir(database.parent.resolve())
    except sqlite3.Error as exc:
        raise BackupError(f"restore failed: {exc}") from None
    finally:
        incoming.unlink(missing_ok=True)
    migrated = migrate.upgrade(url, database)
    return RestoreResult(revision=revision, moved_aside=moved, migrated=migrated)


def _move_aside(database: Path) -> Path | None:
    if not database.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = database.with_name(f"{database.name}.pre-restore-{stamp}")
    # WAL/SHM follow their database's new name so the old one still opens whole.
    for suffix in ("-wal", "-shm"):
        side = database.with_name(database.name + suffix)
        if side.exists():
            side.replace(aside.with_name(aside.name + suffix))
    database.replace(aside)
    return aside
