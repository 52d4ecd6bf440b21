"""`enroll URL TOKEN` and `sync now|status`: the box's link to its org server.

vrlms-edge enroll URL TOKEN       (or: vrlms-edge enroll --file enrollment.toml)
vrlms-edge sync now               summarise events, one full pull + push; prints what moved
vrlms-edge sync status            enrollment, stage, cursor, outbox, last error
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from vrlms_edge.config import Settings
from vrlms_edge.domain.box import ensure_box_identity
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.sync.client import OrgServerRefused, OrgServerUnavailable
from vrlms_edge.sync.enrollment import enroll, read_provisioning
from vrlms_edge.sync.worker import SyncError, sync_once, sync_status

T = TypeVar("T")
EXIT_FAILED = 1


def register(sub: Any) -> None:
    e = sub.add_parser("enroll", help="enroll this box with an org server")
    e.add_argument("url", nargs="?", help="org server URL, e.g. https://org.example")
    e.add_argument("token", nargs="?", help="one-time enrollment token")
    e.add_argument("--file", type=Path, help="provisioning file with url and token (TOML)")
    e.set_defaults(run=run_enroll)

    s = sub.add_parser("sync", help="sync with the org server")
    ssub = s.add_subparsers(dest="sync_command", metavar="COMMAND", required=True)
    ssub.add_parser("now", help="one full pull + push").set_defaults(run=run_now)
    ssub.add_parser("status", help="show sync status").set_defaults(run=run_status)


def _with_db(settings: Settings, job: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.database_url_resolved
        await asyncio.to_thread(migrate.upgrade, url, settings.sqlite_path)
        db = Database(url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            await ensure_box_identity(db, settings.box_name)
            return await job(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def run_enroll(args: argparse.Namespace, settings: Settings) -> int:
    if args.file is not None:
        try:
            url, token = read_provisioning(args.file)
        except ValueError as exc:
            print(f"vrlms-edge: {exc}", file=sys.stderr)
            return 2
    elif args.url and args.token:
        url, token = args.url, args.token
    else:
        print("vrlms-edge: enroll needs URL TOKEN or --file", file=sys.stderr)
        return 2
    try:
        org = _with_db(
            settings,
            lambda db: enroll(
                db,
                ServerClock(),
                settings.data_dir,
                url,
                token,
                ca_bundle=settings.org_server_ca_bundle,
            ),
        )
    except (OrgServerRefused, OrgServerUnavailable) as exc:
        print(f"vrlms-edge: enrollment failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"enrolled with {url} in org {org.slug} ({org.id})")
    return 0


def run_now(args: argparse.Namespace, settings: Settings) -> int:
    try:
        report = _with_db(settings, lambda db: sync_once(db, settings, ServerClock()))
    except (SyncError, OrgServerRefused, OrgServerUnavailable) as exc:
        print(f"vrlms-edge: sync failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    moved = ", ".join(f"{k} {v}" for k, v in sorted(report.by_entity.items())) or "nothing"
    print(f"event summaries: {report.summarised} new or changed")
    print(f"pulled {report.pulled} in {report.pull_pages} page(s), cursor {report.cursor}")
    print(
        f"pushed {report.pushed} in {report.push_pages} page(s), {report.confirmed} confirmed,"
        f" {report.outbox_left} left in outbox"
    )
    print(f"moved: {moved}")
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    status = _with_db(settings, sync_status)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(status)).decode() + "\n")
    return 0
