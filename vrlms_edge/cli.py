"""The vrlms-edge command: global options, then one sub-command per job.

Sub-commands live in vrlms_edge/commands/, one module per group; each module's
`register(subparsers)` adds its commands and sets `run(args, settings) -> exit code`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vrlms_edge import __version__
from vrlms_edge.commands import COMMAND_GROUPS
from vrlms_edge.config import ConfigError, Settings, load_settings

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vrlms-edge", description="The classroom box for VR lessons.")
    parser.add_argument("--version", action="version", version=f"vrlms-edge {__version__}")
    parser.add_argument("--data-dir", type=Path, help="data directory (default ./var)")
    parser.add_argument("--config", type=Path, help="TOML settings file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every statement at DEBUG: unreadable, and slow at ingest rates.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli_values = {"data_dir": args.data_dir}
    cli_values.update(getattr(args, "settings_overrides", lambda a: {})(args))
    try:
        settings = load_settings(config_file=args.config, cli=cli_values)
    except ConfigError as exc:
        print(f"vrlms-edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(settings)
    code: int = args.run(args, settings)
    return code
