"""`simulate`: a class of reference headsets against a box (see headset/simulate.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from vrlms_edge.config import Settings
from vrlms_edge.headset.simulate import SimulationConfig, roster_rows, simulate


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="N simulated headsets follow a lesson; prints skew, delivery, RTT, reconnects",
        description=(
            "Demo students student01.. (PIN 1001..) on headsets DEMO-HS-01.. log in to the box "
            "at --url and follow the lesson; the demo teacher plays and pauses it. For more "
            "than 30, add students first: vrlms-edge simulate --first 31 --students 270 "
            "--print-roster | vrlms-edge import-roster -"
        ),
    )
    p.add_argument("--url", help="box URL, e.g. http://127.0.0.1:8080 (default: discover)")
    p.add_argument("--students", type=int, default=30, help="headsets (default 30)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of driving (default 30)")
    p.add_argument("--first", type=int, default=1, help="first demo student number (default 1)")
    p.add_argument("--event-rate", type=float, default=2.0, help="events/s per headset")
    p.add_argument("--status-every", type=float, default=1.0, help="seconds between statuses")
    p.add_argument("--view-every", type=float, default=0.0, help="seconds between JPEG views")
    p.add_argument("--teacher", default="teacher", help="teacher nickname ('' = do not drive)")
    p.add_argument("--teacher-pin", default="1234")
    p.add_argument("--cycle", type=float, default=5.0, help="seconds between play/pause")
    p.add_argument("--org", help="org slug (boxes holding several orgs)")
    p.add_argument("--json", type=Path, help="also write the summary as JSON to this file")
    p.add_argument("--table", action="store_true", help="print one line per headset")
    p.add_argument(
        "--print-roster",
        action="store_true",
        help="print the roster CSV of students --first.. (for import-roster) and exit",
    )
    p.set_defaults(run=run_simulate)


# How long to look for a box by mDNS when no --url is given.
DISCOVER_TIMEOUT_S = 3.0


def _discover_url(settings: Settings) -> str | None:
    """The first box found by mDNS on the configured interfaces (default: all)."""
    from vrlms_edge.discovery.browse import discover

    boxes = asyncio.run(discover(DISCOVER_TIMEOUT_S, settings.mdns_interfaces or None, want=1))
    return boxes[0].base_url() if boxes else None


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    if args.print_roster:
        sys.stdout.write(roster_rows(args.first, args.first + args.students - 1))
        return 0
    url = args.url or _discover_url(settings)
    if not url:
        print("simulate: no --url given and no box found by mDNS", file=sys.stderr)
        return 2
    config = SimulationConfig(
        url=url,
        students=args.students,
        duration_s=args.duration,
        first=args.first,
        event_rate=args.event_rate,
        status_every_s=args.status_every,
        view_every_s=args.view_every,
        teacher=args.teacher or None,
        teacher_pin=args.teacher_pin,
        cycle_s=args.cycle,
        org=args.org,
    )
    report = asyncio.run(simulate(config))
    if args.table:
        print(report.table())
    summary = report.summary()
    for key, value in summary.items():
        print(f"{key:>16}: {value:.2f}" if isinstance(value, float) else f"{key:>16}: {value}")
    for failure in report.login_failures:
        print(f"login failed: {failure}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if report.headsets and not report.login_failures else 1
