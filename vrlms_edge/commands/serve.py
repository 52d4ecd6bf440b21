"""`serve` (run the box) and `migrate` (bring the schema to head)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any, Final

from vrlms_edge.config import Settings
from vrlms_edge.store import inuse, migrate
from vrlms_edge.systemd import extend_start_timeout, notify

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

# Connections get this long to finish when the box is told to stop.
SHUTDOWN_GRACE_S: Final = 3.0
# Pending connections the kernel queues for accept(): a whole school's headsets reconnect at
# once after a Wi-Fi outage, and aiohttp's default of 128 dropped the rest of the burst (each
# dropped SYN costs that headset a 1 s retransmit). The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG: Final = 1024
# Allocations between two youngest-generation garbage collections (Python's default: 700).
# Under ingest each queued event is a few container objects that live until its batch is
# written (up to the queue's 20,000 events): at 700 every pass re-traversed that backlog, and
# the collector took 13 % of the box's CPU at 20k events/s.
GC_GEN0_THRESHOLD: Final = 50_000


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the box")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="port (0 = any free port)")
    p.set_defaults(run=run_serve, settings_overrides=lambda a: {"host": a.host, "port": a.port})

    m = sub.add_parser("migrate", help="bring the database schema up to date")
    m.set_defaults(run=run_migrate)


def listening_urls(runner: web.AppRunner, scheme: str = "http") -> list[str]:
    urls = []
    for server in runner.sites:
        for sock in getattr(server, "_server").sockets:  # noqa: B009 - aiohttp keeps it private
            host, port = sock.getsockname()[:2]
            if sock.family == socket.AF_INET6:
                host = f"[{host}]"
            urls.append(f"{scheme}://{host}:{port}")
    return urls


def settle_heap() -> None:
    """Once started: the objects made so far (modules, models, the app) live as long as the
    process, so they move out of the collector's sight (`gc.freeze`), and young objects are
    collected less often (GC_GEN0_THRESHOLD). Full collections then traverse only what was
    made since, instead of the whole SQLAlchemy and aiohttp heap each time."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def serve(settings: Settings) -> None:
    # The web stack is imported here so that the other commands start faster.
    from aiohttp import web

    from vrlms_edge.app import create_app
    from vrlms_edge.keys import TLS

    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE_S, handle_signals=False)
    extending = asyncio.create_task(extend_start_timeout())
    try:
        await runner.setup()
    except BaseException:
        extending.cancel()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        tls = app.get(TLS)
        site = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            reuse_address=True,
            ssl_context=tls.context if tls else None,
            backlog=LISTEN_BACKLOG,
        )
        await site.start()
        url = listening_urls(runner, "https" if tls else "http")[0]
        settle_heap()
        print(f"listening on {url}", flush=True)
        extending.cancel()
        notify("READY=1", f"STATUS=listening on {url}")
        await stop.wait()
        log.info("stopping")
        notify("STOPPING=1", "STATUS=stopping")
    finally:
        extending.cancel()
        await runner.cleanup()


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    if settings.sqlite_path is None:
        # The live paths run whole transactions on SQLite connections of their own
        # (store/db.py write_raw/read_raw); PostgreSQL is the org server's database.
        print(
            "vrlms-edge: the box keeps its data in SQLite; database_url is for `cloud serve`",
            file=sys.stderr,
        )
        return 2
    # One server per data directory; `restore` waits for none to run.
    try:
        with inuse.hold(settings.data_dir, "serve"):
            asyncio.run(serve(settings))
    except inuse.DataDirInUse as exc:
        print(f"vrlms-edge: {exc}", file=sys.stderr)
        return 1
    return 0


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ran = migrate.upgrade(settings.database_url_resolved, settings.sqlite_path)
    print("migrated to head" if ran else "already at head")
    return 0
