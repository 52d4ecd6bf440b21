"""`devices list|approve|block|bind|unbind`: the headsets of the box's org."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from vrlms_edge.commands.runner import EXIT_OK, add_org_option, org_of, run_on_database, say
from vrlms_edge.config import Settings
from vrlms_edge.domain import devices, roster
from vrlms_edge.errors import AppError
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database


def register(sub: Any) -> None:
    p = sub.add_parser("devices", help="list, approve, block and bind headsets")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    ls = actions.add_parser("list", help="list headsets")
    ls.add_argument("--status", choices=["pending", "approved", "blocked"])
    ls.add_argument("--json", action="store_true", help='print {"devices": [...]}')
    add_org_option(ls)
    ls.set_defaults(run=run_list)

    approve = actions.add_parser(
        "approve", help="let headsets join sessions (unknown ids are registered)"
    )
    approve.add_argument("device_ids", nargs="+", metavar="DEVICE_ID")
    add_org_option(approve)
    approve.set_defaults(run=run_approve)

    block = actions.add_parser("block", help="shut headsets out (their tokens are revoked)")
    block.add_argument("device_ids", nargs="+", metavar="DEVICE_ID")
    add_org_option(block)
    block.set_defaults(run=run_block)

    bind = actions.add_parser("bind", help="bind a headset to one user")
    bind.add_argument("device_id", metavar="DEVICE_ID")
    bind.add_argument("nickname")
    add_org_option(bind)
    bind.set_defaults(run=run_bind)

    unbind = actions.add_parser("unbind", help="let any user log in on a headset")
    unbind.add_argument("device_id", metavar="DEVICE_ID")
    add_org_option(unbind)
    unbind.set_defaults(run=run_unbind)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        found: list[devices.DeviceView] = []
        cursor: str | None = None
        while True:
            page = await devices.list_devices(db, org.id, status=args.status, cursor=cursor)
            found += page.devices
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        if args.json:
            print(msgspec.json.encode(devices.DevicePage(devices=found)).decode())
            return EXIT_OK
        print(f"{'DEVICE_ID':<24} {'STATUS':<9} {'BOUND TO':<20} {'MODEL':<18} LAST SEEN")
        for d in found:
            bound = d.bound_user.nickname if d.bound_user else "-"
            seen = d.last_seen_at.isoformat(timespec="seconds") if d.last_seen_at else "never"
            print(f"{d.device_id:<24} {d.status:<9} {bound:<20} {d.model or '-':<18} {seen}")
        say(f"{len(found)} headsets in {org.slug}")
        return EXIT_OK

    return run_on_database(settings, job)


def run_approve(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        for device_id in args.device_ids:
            try:
                await devices.get_device(db, org.id, device_id)
            except AppError:
                await devices.register_device(db, org.id, device_id)
                say(f"registered {device_id}")
            await devices.approve_device(db, org.id, device_id)
            say(f"approved {device_id}")
        return EXIT_OK

    return run_on_database(settings, job)


def run_block(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        for device_id in args.device_ids:
            await devices.block_device(db, org.id, device_id, now=ServerClock().now())
            say(f"blocked {device_id}")
        return EXIT_OK

    return run_on_database(settings, job)


def run_bind(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        user = await roster.find_user(db, org.id, args.nickname)
        view = await devices.bind_device(db, org.id, args.device_id, user.id)
        say(f"bound {view.device_id} to {user.nickname}")
        if view.status != "approved":
            say(f"note: {view.device_id} is {view.status}; approve it before it can be used")
        return EXIT_OK

    return run_on_database(settings, job)


def run_unbind(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        view = await devices.unbind_device(db, org.id, args.device_id)
        say(f"unbound {view.device_id}")
        return EXIT_OK

    return run_on_database(settings, job)
