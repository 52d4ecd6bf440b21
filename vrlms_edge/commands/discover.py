"""`discover`: list the boxes that answer mDNS on this network (or follow them with --watch)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Final

from vrlms_edge.config import Settings
from vrlms_edge.discovery.browse import BoxBrowser, BoxEvent, discover
from vrlms_edge.discovery.service import FoundBox

# Long enough for boxes to answer (probe + announce take about 1 s), short enough to wait.
DEFAULT_TIMEOUT_S: Final = 3.0
EXIT_NONE_FOUND: Final = 1
EXIT_MDNS_OFF: Final = 2


def register(sub: Any) -> None:
    p = sub.add_parser("discover", help="list classroom boxes found over mDNS")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to listen (default 3)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--watch",
        action="store_true",
        help="print boxes appearing, changing and leaving until --timeout ends",
    )
    p.set_defaults(run=run_discover)


def _as_dict(box: FoundBox) -> dict[str, Any]:
    return {
        "name": box.name,
        "addresses": box.addresses,
        "port": box.port,
        "txt": box.txt,
        "host": box.host,
    }


def _line(box: FoundBox) -> str:
    txt = " ".join(f"{k}={v}" for k, v in box.txt.items())
    return f"{box.name}\t{', '.join(box.addresses)}\tport {box.port}\t{txt}"


def _print_event(event: BoxEvent, as_json: bool) -> None:
    if as_json:
        body: dict[str, Any] = {"event": event.kind, "name": event.name}
        if event.box is not None:
            body.update(_as_dict(event.box))
        print(json.dumps(body), flush=True)
    else:
        detail = _line(event.box) if event.box is not None else event.name
        print(f"{event.kind}\t{detail}", flush=True)


async def _watch(settings: Settings, timeout_s: float, as_json: bool) -> None:
    async with BoxBrowser(settings.mdns_interfaces) as browser:
        if as_json:
            print(json.dumps({"event": "browsing"}), flush=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(browser.events.get(), remaining)
            except TimeoutError:
                break
            _print_event(event, as_json)


def run_discover(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.mdns:
        print("vrlms-edge: mDNS is off (VRLMS_MDNS=off)", file=sys.stderr)
        return EXIT_MDNS_OFF
    if args.watch:
        asyncio.run(_watch(settings, args.timeout, args.json))
        return 0
    boxes = asyncio.run(discover(args.timeout, settings.mdns_interfaces))
    for box in boxes:
        print(json.dumps(_as_dict(box)) if args.json else _line(box), flush=True)
    if not boxes and not args.json:
        print("no box found", file=sys.stderr)
    return 0 if boxes else EXIT_NONE_FOUND
