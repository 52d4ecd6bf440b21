"""Start-up check of the SQLite file: a corrupt database is moved aside, never crash-looped on.

A power cut during a write should leave SQLite (WAL mode) intact; a failing SD card or disk may
not. When `PRAGMA quick_check` fails, the file and its -wal/-shm go to
`<name>.corrupt.<UTC time>` next to it (kept for forensics and manual recovery) and the box
starts with a fresh database, so a classroom still gets a working box.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

# SQLite's side files in WAL mode; they belong to the main file and move with it.
SIDE_SUFFIXES: Final = ("-wal", "-shm", "-journal")


def _quick_check(path: Path, mode: str) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=30)
    try:
        return [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
    finally:
        conn.close()


def check_database(path: Path) -> str | None:
    """None when the file is sound (or absent), else what SQLite says is wrong."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        # Read-only first: closing a read-write connection may checkpoint (and so rewrite) a
        # WAL that a corrupt file's forensics would want untouched.
        problems = _quick_check(path, "ro")
    except sqlite3.Error as exc:
        if not getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_READONLY", "SQLITE_CANT")):
            return str(exc)
        # A hot rollback journal (power cut during the first migration) needs a writer.
        try:
            problems = _quick_check(path, "rw")
        except sqlite3.Error as exc2:
            return str(exc2)
    if problems == ["ok"]:
        return None
    return "; ".join(problems[:5])


def move_aside(path: Path, now: dt.datetime) -> Path:
    """Rename the database and its side files to `.corrupt.<UTC time>`; returns the new
    path of the main file."""
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt.{stamp}")
    path.rename(target)
    for suffix in SIDE_SUFFIXES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target


def ensure_sound_database(path: Path, now: dt.datetime) -> Path | None:
    """Check the database; move a corrupt one aside. Returns where it went, or None.
    Blocking: call from a worker thread."""
    problem = check_database(path)
    if problem is None:
        return None
    target = move_aside(path, now)
    log.critical(
        "DATABASE CORRUPT: %s failed its integrity check (%s). It was moved to %s and the box "
        "starts with an EMPTY database. Restore a backup (docs/provisioning.md) to get the "
        "data back.",
        path,
        problem,
        target,
    )
    return target
