"""What the database commands share: open the migrated database, run one coroutine over it,
turn a refusal into one line on stderr and an exit code, read secrets, show progress.

Exit codes: 0 done, 1 refused or failed (one line says why), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TextIO

from sqlalchemy.exc import SQLAlchemyError

from vrlms_edge.config import Settings
from vrlms_edge.domain.roster import OrgView, box_org, count_orgs, get_or_create_org
from vrlms_edge.errors import AppError
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
# The org a box without one gets when its first users arrive (CLI `users add`, a roster).
DEFAULT_ORG_SLUG: Final = "school"
DEFAULT_ORG_NAME: Final = "School"
# A non-terminal stderr (a log file, CI) gets a progress line at most this often.
PROGRESS_LINE_EVERY_S: Final = 2.0


class UsageError(Exception):
    """Wrong use of a command: reported like argparse errors, exit code 2."""


def say(message: str) -> None:
    """A status line for people: stderr, so stdout stays clean for data (lists, CSV)."""
    print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"vrlms-edge: {message}", file=sys.stderr, flush=True)
    return code


def run_on_database(
    settings: Settings, job: Callable[[Database], Awaitable[int]], *, migrate_first: bool = True
) -> int:
    """Bring the schema to head, then run `job(db)`; AppError -> one line, exit 1."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if migrate_first:
            # Alembic narrates every check at INFO; one line of ours says when one ran.
            logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
            if migrate.upgrade(settings.database_url_resolved, settings.sqlite_path):
                say("database schema brought up to date")
    except (OSError, SQLAlchemyError) as exc:
        return fail(f"cannot open the database: {exc}")

    async def main() -> int:
        url, synchronous = settings.database_url_resolved, settings.sqlite_synchronous
        db = Database(url, sqlite_synchronous=synchronous)
        try:
            return await job(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except AppError as exc:
        return fail(exc.message)
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)
    except SQLAlchemyError as exc:
        # First line only: the rest is SQL and parameters (hashes, never plain secrets).
        return fail(f"database error: {str(exc).splitlines()[0]}")
    except KeyboardInterrupt:
        return fail("interrupted", 130)


async def org_of(db: Database, args: argparse.Namespace) -> OrgView:
    """The org a command acts on: `--org SLUG`, else the box's org."""
    return await box_org(db, getattr(args, "org", None))


async def org_to_fill(db: Database, args: argparse.Namespace) -> OrgView:
    """Like org_of, but on a box without any org the first user brings one: `--org` (default
    `school`) named `--org-name` (default `School`)."""
    try:
        return await org_of(db, args)
    except AppError as exc:
        if exc.code != "no_org" or await count_orgs(db) > 0:
            raise
    slug = getattr(args, "org", None) or DEFAULT_ORG_SLUG
    name = getattr(args, "org_name", None) or DEFAULT_ORG_NAME
    org = await get_or_create_org(db, slug, name)
    say(f"created the org {org.slug} ({org.name})")
    return org


def add_org_option(parser: Any, *, creates: bool = False) -> None:
    parser.add_argument("--org", metavar="SLUG", help="org to act on (default: the box's only org)")
    if creates:
        parser.add_argument(
            "--org-name",
            help=f"name of the org to create on a box without one (default {DEFAULT_ORG_NAME})",
        )


def read_secret(
    what: str, *, from_stdin: bool, confirm: bool = True, stdin: TextIO | None = None
) -> str:
    """A PIN or password from one stdin line (`--...-stdin`) or typed at a prompt; never
    echoed, never logged."""
    stream = stdin or sys.stdin
    if from_stdin:
        line = stream.readline()
        if not line:
            raise UsageError(f"expected the {what} on stdin")
        return line.rstrip("\r\n")
    if not stream.isatty():
        raise UsageError(f"no terminal to ask for the {what}: pass it with --{what}-stdin")
    first = getpass.getpass(f"{what}: ")
    if confirm and getpass.getpass(f"{what} again: ") != first:
        raise UsageError(f"the two {what}s differ")
    return first


class Progress:
    """`label: done/total (pct%)` on stderr: rewritten in place on a terminal, else an
    occasional line, and always the final one."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        final = done >= total
        if not (self.tty or final or now - self._last >= PROGRESS_LINE_EVERY_S):
            return
        self._last = now
        pct = 100 * done // total if total else 100
        text = f"{self.label}: {done}/{total} ({pct}%)"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
