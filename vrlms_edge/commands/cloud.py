"""`cloud ...`: run and administer the org server (role `cloud`).

    vrlms-edge cloud serve [--host H] [--port P]
    vrlms-edge cloud orgs add SLUG NAME
    vrlms-edge cloud admins add ORG NICKNAME (--password P | --password-stdin)
    vrlms-edge cloud enrollment-token ORG [--ttl SECONDS]

The database is VRLMS_DATABASE_URL (postgresql+asyncpg://...), else a SQLite file in the
data directory for local trials.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from vrlms_edge.cloud.app import cloud_database_url, create_cloud_app
from vrlms_edge.cloud.orgs import (
    ENROLLMENT_TOKEN_TTL_S,
    add_admin,
    create_org,
    issue_enrollment_token,
    org_by_slug,
)
from vrlms_edge.cloud.store import OrgDatabase
from vrlms_edge.commands.serve import SHUTDOWN_GRACE_S, listening_urls
from vrlms_edge.config import Settings
from vrlms_edge.errors import AppError
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store import migrate

T = TypeVar("T")


def register(sub: Any) -> None:
    cloud = sub.add_parser("cloud", help="the org server: serve and administer")
    csub = cloud.add_subparsers(dest="cloud_command", metavar="COMMAND", required=True)

    p = csub.add_parser("serve", help="run the org server")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="port (0 = any free port)")
    p.set_defaults(run=run_serve, settings_overrides=lambda a: {"host": a.host, "port": a.port})

    orgs = csub.add_parser("orgs", help="organisations")
    osub = orgs.add_subparsers(dest="orgs_command", metavar="COMMAND", required=True)
    add = osub.add_parser("add", help="create an org")
    add.add_argument("slug")
    add.add_argument("name")
    add.set_defaults(run=run_orgs_add)

    admins = csub.add_parser("admins", help="org admins (password login)")
    asub = admins.add_subparsers(dest="admins_command", metavar="COMMAND", required=True)
    aadd = asub.add_parser("add", help="add an admin to an org")
    aadd.add_argument("org", help="org slug")
    aadd.add_argument("nickname")
    aadd.add_argument("--display-name", default="")
    secret = aadd.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password")
    secret.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    aadd.set_defaults(run=run_admins_add)

    tok = csub.add_parser("enrollment-token", help="print a one-time box enrollment token")
    tok.add_argument("org", help="org slug")
    tok.add_argument("--ttl", type=int, default=ENROLLMENT_TOKEN_TTL_S, help="seconds valid")
    tok.set_defaults(run=run_enrollment_token)


def _with_db(settings: Settings, job: Callable[[OrgDatabase], Awaitable[T]]) -> T:
    async def main() -> T:
        url = cloud_database_url(settings)
        sqlite_path = Path(url.split(":///", 1)[1]) if url.startswith("sqlite") else None
        if sqlite_path is not None:
            sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(migrate.upgrade, url, sqlite_path)
        db = OrgDatabase(url)
        try:
            return await job(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _fail(err: AppError) -> int:
    print(f"vrlms-edge: {err.message} ({err.code})", file=sys.stderr)
    return 1


def run_orgs_add(args: argparse.Namespace, settings: Settings) -> int:
    try:
        org = _with_db(settings, lambda db: create_org(db, args.slug, args.name))
    except AppError as err:
        return _fail(err)
    print(org.id)
    return 0


def run_admins_add(args: argparse.Namespace, settings: Settings) -> int:
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else args.password
    try:
        user = _with_db(
            settings,
            lambda db: add_admin(db, args.org, args.nickname, password, args.display_name),
        )
    except AppError as err:
        return _fail(err)
    print(user.id)
    return 0


def run_enrollment_token(args: argparse.Namespace, settings: Settings) -> int:
    if not 60 <= args.ttl <= 30 * 24 * 3600:
        print("vrlms-edge: --ttl must be 60 s .. 30 days", file=sys.stderr)
        return 2

    async def job(db: OrgDatabase) -> str:
        org = await org_by_slug(db, args.org)
        token, _ = await issue_enrollment_token(db, org.id, now=ServerClock().now(), ttl_s=args.ttl)
        return token

    try:
        print(_with_db(settings, job))
    except AppError as err:
        return _fail(err)
    return 0


async def serve(settings: Settings) -> None:
    app = create_cloud_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE_S, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
        await site.start()
        print(f"listening on {listening_urls(runner)[0]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(serve(settings))
    return 0
