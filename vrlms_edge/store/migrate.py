"""Schema migrations (Alembic, shipped in the package) and the copy taken before one runs."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(sqlite_path: Path) -> str | None:
    if not sqlite_path.exists():
        return None
    engine = create_engine(f"sqlite:///{sqlite_path}")
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def backup_before_migration(sqlite_path: Path) -> Path:
    """A consistent copy of the SQLite file (online backup API), next to it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = sqlite_path.with_name(f"{sqlite_path.name}.pre-migration-{stamp}")
    src = sqlite3.connect(sqlite_path)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return target


def upgrade(url: str, sqlite_path: Path | None) -> bool:
    """Bring the schema to head. Blocking: call from a worker thread. Returns True if a
    migration ran. An existing SQLite database is copied first."""
    head = head_revision(url)
    if sqlite_path is not None:
        current = current_revision(sqlite_path)
        if current == head:
            return False
        if current is not None and sqlite_path.stat().st_size > 0:
            copy = backup_before_migration(sqlite_path)
            log.info("migrating %s -> %s; copy saved at %s", current, head, copy)
    command.upgrade(alembic_config(url), "head")
    return True


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
