"""store/migrate.py and the shipped migrations: head equals the models; down and up again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from vrlms_edge.store import migrate
from vrlms_edge.store.models import Base


def _differences(path: Path) -> list[object]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_empty_database_migrates_to_exactly_the_models(tmp_path: Path) -> None:
    path = tmp_path / "vrlms.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    assert migrate.upgrade(url, path) is True
    assert migrate.current_revision(path) == migrate.head_revision(url)
    assert _differences(path) == []
    assert _tables(path) == set(Base.metadata.tables) | {"alembic_version"}
    assert migrate.upgrade(url, path) is False  # already at head: nothing runs


def test_downgrade_to_base_and_upgrade_again(tmp_path: Path) -> None:
    path = tmp_path / "vrlms.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    migrate.upgrade(url, path)
    migrate.downgrade(url, "base")
    assert migrate.current_revision(path) is None
    assert _tables(path) <= {"alembic_version"}
    migrate.upgrade(url, path)
    assert migrate.current_revision(path) == migrate.head_revision(url)
    assert _differences(path) == []


def test_the_copy_taken_before_a_migration_holds_the_data(tmp_path: Path) -> None:
    path = tmp_path / "vrlms.sqlite3"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}", path)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO sync_state (name, value, updated_at) VALUES ('k', '{}', '2026-01-01')"
        )
    copy = migrate.backup_before_migration(path)
    assert copy.parent == path.parent and "pre-migration" in copy.name
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT name FROM sync_state").fetchall() == [("k",)]
