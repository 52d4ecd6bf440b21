"""`users add|list|set-pin|set-password|disable|enable`: the people of the box's org."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from vrlms_edge.commands.runner import (
    EXIT_OK,
    UsageError,
    add_org_option,
    org_of,
    org_to_fill,
    read_secret,
    run_on_database,
    say,
)
from vrlms_edge.config import Settings
from vrlms_edge.domain import roster
from vrlms_edge.store.db import Database


def register(sub: Any) -> None:
    p = sub.add_parser("users", help="add, list, disable users; set PINs and passwords")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    add = actions.add_parser("add", help="add a user")
    add.add_argument("nickname")
    add.add_argument("--role", required=True, choices=["admin", "teacher", "student"])
    add.add_argument("--name", help="display name (default: the nickname)")
    pins = add.add_mutually_exclusive_group()
    pins.add_argument("--pin", help="4-digit PIN")
    pins.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    _password_options(add)
    add_org_option(add, creates=True)
    add.set_defaults(run=run_add)

    ls = actions.add_parser("list", help="list users")
    ls.add_argument("--role", choices=["admin", "teacher", "student"])
    ls.add_argument("--json", action="store_true", help='print {"users": [...]}')
    add_org_option(ls)
    ls.set_defaults(run=run_list)

    pin = actions.add_parser("set-pin", help="set a user's PIN")
    pin.add_argument("nickname")
    pins = pin.add_mutually_exclusive_group()
    pins.add_argument("pin", nargs="?", help="4-digit PIN (default: ask, or --pin-stdin)")
    pins.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    add_org_option(pin)
    pin.set_defaults(run=run_set_pin)

    password = actions.add_parser("set-password", help="set a teacher's or admin's password")
    password.add_argument("nickname")
    _password_options(password)
    add_org_option(password)
    password.set_defaults(run=run_set_password)

    for name, disabled in (("disable", True), ("enable", False)):
        q = actions.add_parser(name, help=f"{name} a user's login")
        q.add_argument("nickname")
        add_org_option(q)
        q.set_defaults(run=run_disable, disabled=disabled)


def _password_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    group.add_argument("--ask-password", action="store_true", help="type it at a prompt")
    group.add_argument(
        "--password", help="the password (visible to other users of this machine: prefer stdin)"
    )


def _password(args: argparse.Namespace, *, needed: bool) -> str | None:
    if args.password is not None:
        return str(args.password)
    if args.password_stdin or args.ask_password:
        return read_secret("password", from_stdin=args.password_stdin)
    if needed and sys.stdin.isatty():
        return read_secret("password", from_stdin=False)
    if needed:
        raise UsageError("give the password with --password-stdin or --ask-password")
    return None


def run_add(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        pin = read_secret("pin", from_stdin=True) if args.pin_stdin else args.pin
        password = _password(args, needed=args.role == "admin")
        # Checked before an org may be created for this first user.
        roster.check_nickname(args.nickname)
        roster.check_credentials(roster.check_role(args.role), pin, password)
        org = await org_to_fill(db, args)
        user = await roster.create_user(
            db, org.id, args.role, args.nickname, args.name or args.nickname, pin, password
        )
        say(f"added {user.role} {user.nickname} ({user.display_name})")
        return EXIT_OK

    return run_on_database(settings, job)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        users: list[roster.UserView] = []
        cursor: str | None = None
        while True:
            page = await roster.list_users(db, org.id, role=args.role, cursor=cursor)
            users += page.users
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        if args.json:
            print(msgspec.json.encode(roster.UserPage(users=users)).decode())
            return EXIT_OK
        print(f"{'NICKNAME':<24} {'ROLE':<8} {'STATE':<8} {'LOGIN':<13} DISPLAY NAME")
        for u in users:
            kinds = (("pin", u.has_pin), ("password", u.has_password))
            login = "+".join(kind for kind, present in kinds if present)
            state = "disabled" if u.disabled else "active"
            print(f"{u.nickname:<24} {u.role:<8} {state:<8} {login:<13} {u.display_name}")
        say(f"{len(users)} users in {org.slug}")
        return EXIT_OK

    return run_on_database(settings, job)


def run_set_pin(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        user = await roster.find_user(db, org.id, args.nickname)
        pin = args.pin if args.pin is not None else read_secret("pin", from_stdin=args.pin_stdin)
        await roster.set_pin(db, org.id, user.id, pin)
        say(f"PIN of {user.nickname} changed")
        return EXIT_OK

    return run_on_database(settings, job)


def run_set_password(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        user = await roster.find_user(db, org.id, args.nickname)
        password = _password(args, needed=True)
        assert password is not None
        await roster.set_password(db, org.id, user.id, password)
        say(f"password of {user.nickname} changed")
        return EXIT_OK

    return run_on_database(settings, job)


def run_disable(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        org = await org_of(db, args)
        user = await roster.find_user(db, org.id, args.nickname)
        await roster.set_disabled(db, org.id, user.id, args.disabled)
        say(f"{user.nickname} {'disabled' if args.disabled else 'enabled'}")
        return EXIT_OK

    return run_on_database(settings, job)
