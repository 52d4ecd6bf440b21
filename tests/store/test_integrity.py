"""A corrupt SQLite file is moved aside with its WAL/SHM and the box starts fresh."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import start_box, stop_box
from tests.conftest import test_settings as box_settings
from vrlms_edge.store.integrity import check_database, ensure_sound_database

NOW = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


def _make_db(path: Path, rows: int = 2000) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE INDEX t_v ON t(v)")
    conn.executemany("INSERT INTO t(v) VALUES (?)", [(f"value {i}" * 5,) for i in range(rows)])
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _corrupt_pages(path: Path) -> None:
    """Overwrite pages in the middle of the file (keeps the header, so it still opens)."""
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for i in range(3 * page, 6 * page):
        data[i] = 0x5A
    path.write_bytes(bytes(data))


def test_a_sound_database_passes(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite3"
    assert check_database(db) is None  # absent
    _make_db(db)
    assert check_database(db) is None
    assert ensure_sound_database(db, NOW) is None
    assert db.exists()


def test_a_corrupt_database_is_moved_aside_with_its_side_files(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite3"
    _make_db(db)
    _corrupt_pages(db)
    (tmp_path / "x.sqlite3-wal").write_bytes(b"wal")
    (tmp_path / "x.sqlite3-shm").write_bytes(b"shm")
    assert check_database(db) is not None
    moved = ensure_sound_database(db, NOW)
    assert moved == tmp_path / "x.sqlite3.corrupt.20260304T050607Z"
    assert moved.exists() and not db.exists()
    assert (tmp_path / "x.sqlite3.corrupt.20260304T050607Z-wal").read_bytes() == b"wal"
    # The -shm is only an index that SQLite rebuilds; it moves but its bytes may change.
    assert (tmp_path / "x.sqlite3.corrupt.20260304T050607Z-shm").exists()
    assert not (tmp_path / "x.sqlite3-wal").exists()


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite3"
    db.write_bytes(b"\x00garbage" * 1000)
    assert ensure_sound_database(db, NOW) is not None
    assert not db.exists()


async def test_the_box_starts_fresh_on_a_corrupt_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = box_settings(tmp_path / "data")
    box = await start_box(settings)
    await stop_box(box)
    db = settings.sqlite_path
    assert db is not None
    # Bloat the file so there are pages to break past the schema.
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE filler (v TEXT)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(200)])
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    _corrupt_pages(db)
    box = await start_box(settings)
    try:
        async with box.http.get("/api/health") as resp:
            assert resp.status == 200
    finally:
        await stop_box(box)
    assert "DATABASE CORRUPT" in caplog.text
    assert list(db.parent.glob("vrlms.sqlite3.corrupt.*"))
