"""`import-roster FILE.csv [--dry-run]` and `export-roster`: roster files
(class,nickname,display_name,role,pin,device_id), see domain/roster_csv.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from vrlms_edge.commands.runner import (
    DEFAULT_ORG_NAME,
    DEFAULT_ORG_SLUG,
    EXIT_FAILED,
    EXIT_OK,
    Progress,
    add_org_option,
    fail,
    org_of,
    run_on_database,
    say,
)
from vrlms_edge.config import Settings
from vrlms_edge.domain import roster, roster_csv
from vrlms_edge.errors import AppError
from vrlms_edge.store.db import Database

# Far above any school's roster file; refuses to read a wrong, huge file into memory.
MAX_FILE_BYTES: Final = 16 * 1024 * 1024


def register(sub: Any) -> None:
    p = sub.add_parser("import-roster", help="add teachers, students, classes, headsets from CSV")
    p.add_argument("file", metavar="FILE.csv", help="roster CSV ('-' for stdin)")
    p.add_argument("--dry-run", action="store_true", help="check the file, change nothing")
    add_org_option(p, creates=True)
    p.set_defaults(run=run_import)

    e = sub.add_parser("export-roster", help="write the roster as CSV (PIN column empty)")
    e.add_argument("--output", "-o", type=Path, help="file to write (default stdout)")
    add_org_option(e)
    e.set_defaults(run=run_export)


def _read(name: str) -> str:
    if name == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    else:
        with open(name, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise AppError(422, "too_large", f"{name}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AppError(422, "not_utf8", f"{name}: not UTF-8 text (byte {exc.start})") from None


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    try:
        text = _read(args.file)
    except OSError as exc:
        return fail(f"{args.file}: {exc.strerror}")
    except AppError as exc:
        return fail(exc.message)

    async def job(db: Database) -> int:
        org_id: str | None
        try:
            org_id = (await org_of(db, args)).id
        except AppError as exc:
            if exc.code != "no_org" or await roster.count_orgs(db) > 0:
                raise
            org_id = None  # an empty box: the roster brings the school
        new_org = (args.org or DEFAULT_ORG_SLUG, args.org_name or DEFAULT_ORG_NAME)
        report = await roster_csv.import_roster(
            db,
            org_id,
            text,
            dry_run=args.dry_run,
            progress=Progress("import: hashing PINs"),
            new_org=new_org,
        )
        for error in report.errors:
            where = f"line {error.line}" if error.line else "..."
            print(f"{args.file}: {where}: {error.reason}", file=sys.stderr)
        if report.errors:
            return fail(f"{len(report.errors)} bad rows: nothing imported", EXIT_FAILED)
        counts = (
            f"{report.users} users, {report.classes_created} new classes, "
            f"{report.enrollments} enrollments, {report.devices} headsets"
        )
        if report.dry_run:
            print(f"{args.file} is valid: would import {counts} (dry run: nothing written)")
        else:
            print(f"imported {counts}")
        return EXIT_OK

    return run_on_database(settings, job)


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        text = await roster_csv.export_roster(db, org.id)
        if args.output is None:
            sys.stdout.write(text)
        else:
            try:
                args.output.write_text(text, encoding="utf-8")
            except OSError as exc:
                return fail(f"{args.output}: {exc.strerror}")
            say(f"wrote {text.count(chr(10)) - 1} rows to {args.output}")
        return EXIT_OK

    return run_on_database(settings, job)
