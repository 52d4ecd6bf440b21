"""`demo [--if-empty]`: load the demo school and print how to log in."""

from __future__ import annotations

import argparse
import time
from typing import Any

from vrlms_edge.commands.runner import EXIT_OK, Progress, run_on_database, say
from vrlms_edge.config import Settings
from vrlms_edge.domain import demo
from vrlms_edge.store.db import Database


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="load the demo school (teacher, admin, 30 students, ...)")
    p.add_argument(
        "--if-empty", action="store_true", help="do nothing when the box already holds data"
    )
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    async def job(db: Database) -> int:
        if args.if_empty and await demo.has_data(db):
            say("demo: the box already holds data; nothing loaded")
            return EXIT_OK
        started = time.monotonic()
        summary = await demo.load_demo(db, progress=Progress("demo: hashing PINs"))
        took = time.monotonic() - started
        print(
            f"Loaded the demo school in {took:.1f} s: {summary.users} users, "
            f"{summary.devices} headsets, {summary.classes} class, {summary.lessons} lessons, "
            "1 session."
        )
        print("Log in with:")
        for login in summary.logins:
            parts = [f"PIN {login.pin}"] if login.pin else []
            parts += [f"password {login.password}"] if login.password else []
            print(f"  {login.role:<8} {login.nickname:<22} {', '.join(parts)}")
        return EXIT_OK

    return run_on_database(settings, job)
