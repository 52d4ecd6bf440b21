"""A data directory with a migrated database and one org, for CLI tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vrlms_edge.domain import roster
from vrlms_edge.store.db import Database


@pytest.fixture
async def school_dir(tmp_path: Path, migrated_template: Path) -> Path:
    """`<tmp>/data` holding a database with the org `school` and nothing else."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / "vrlms.sqlite3"
    shutil.copyfile(migrated_template, path)
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await roster.get_or_create_org(db, "school", "School")
    finally:
        await db.dispose()
    return data_dir
