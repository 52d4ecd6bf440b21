"""`backup FILE` (online, consistent while the box serves) and `restore FILE` (box stopped)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vrlms_edge.commands.runner import EXIT_OK, Progress, fail, say
from vrlms_edge.config import Settings
from vrlms_edge.store import inuse
from vrlms_edge.store.backup import BackupError, backup, restore


def register(sub: Any) -> None:
    b = sub.add_parser("backup", help="copy the database to FILE (safe while the box runs)")
    b.add_argument("file", type=Path, metavar="FILE")
    b.set_defaults(run=run_backup)

    r = sub.add_parser("restore", help="replace the database by a backup (stop the box first)")
    r.add_argument("file", type=Path, metavar="FILE")
    r.set_defaults(run=run_restore)


def run_backup(args: argparse.Namespace, settings: Settings) -> int:
    database = settings.sqlite_path
    if database is None:
        return fail("backup copies the box's SQLite database; use pg_dump for PostgreSQL")
    try:
        result = backup(database, args.file, Progress("backup: pages"))
    except (BackupError, OSError) as exc:
        return fail(str(exc))
    mib = result.bytes / (1024 * 1024)
    restarted = f", restarted {result.restarts}x by writers" if result.restarts else ""
    say(
        f"backup: {result.pages} pages ({mib:.1f} MiB), schema {result.revision}, "
        f"{result.seconds:.1f} s{restarted} -> {result.path}"
    )
    return EXIT_OK


def run_restore(args: argparse.Namespace, settings: Settings) -> int:
    database = settings.sqlite_path
    if database is None:
        return fail("restore replaces the box's SQLite database; use pg_restore for PostgreSQL")
    try:
        with inuse.hold(settings.data_dir, "restore"):
            result = restore(
                args.file, database, settings.database_url_resolved, Progress("restore: pages")
            )
    except (BackupError, inuse.DataDirInUse, OSError) as exc:
        return fail(str(exc))
    if result.moved_aside is not None:
        say(f"restore: the previous database is kept at {result.moved_aside}")
    migrated = " and migrated to head" if result.migrated else ""
    say(f"restore: {args.file} (schema {result.revision}) is now the database{migrated}")
    return EXIT_OK
