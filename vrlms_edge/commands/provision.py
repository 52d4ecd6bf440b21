"""`provision FILE`: apply an appliance provisioning file once (see docs/provisioning.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vrlms_edge.appliance.provision import ProvisionError, apply
from vrlms_edge.config import CONFIG_FILE_NAME, Settings


def register(sub: Any) -> None:
    p = sub.add_parser("provision", help="apply a provisioning file once (appliance image)")
    p.add_argument("file", type=Path, help="vrlms-provision.toml")
    p.add_argument("--owner", help="chown the data dir to this user afterwards")
    p.add_argument("--network-dir", type=Path, help="where to write a static .network file")
    p.set_defaults(run=run_provision)


def _enroller(config_file: Path) -> Callable[[Settings, str, str], bool]:
    def enroll(settings: Settings, url: str, token: str) -> bool:
        """`vrlms-edge enroll URL TOKEN`; False when it fails (offline, say)."""
        from vrlms_edge.cli import main

        # The same settings file as the box (box name!), which provisioning just wrote.
        args = ["--data-dir", str(settings.data_dir), "--config", str(config_file)]
        return main([*args, "enroll", url, token]) == 0

    return enroll


def run_provision(args: argparse.Namespace, settings: Settings) -> int:
    config_file = args.config or settings.data_dir / CONFIG_FILE_NAME
    try:
        result = apply(
            args.file,
            settings,
            config_file=config_file,
            # Before the box runs there is no ServerClock; the wall clock is what we have.
            now=dt.datetime.now(dt.UTC),
            network_dir=args.network_dir,
            owner=args.owner,
            enroll=_enroller(config_file),
        )
    except ProvisionError as exc:
        print(f"vrlms-edge provision: {args.file}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"vrlms-edge provision: {exc}", file=sys.stderr)
        return 1
    for step in result.steps:
        print(f"provision: {step}")
    return 0
