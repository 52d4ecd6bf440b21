"""Shared fixtures: the real box on 127.0.0.1 (in-process or as a `vrlms-edge serve` process)
with a real SQLite file in a temporary data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from vrlms_edge.app import create_app
from vrlms_edge.commands.serve import listening_urls
from vrlms_edge.config import Settings
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database

IN_CI = os.environ.get("CI") == "true"
# The throwaway PostgreSQL cluster and org server fixtures.
pytest_plugins = ["tests.orgserver"]


def need(condition: bool, reason: str) -> None:
    """Skip when something the test needs is missing, but never in CI: there it fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


def test_settings(data_dir: Path, **overrides: Any) -> Settings:
    base = Settings(
        data_dir=data_dir,
        host="127.0.0.1",
        port=0,
        mdns=False,
        mdns_interfaces=["127.0.0.1"],
        heartbeat_s=5.0,
    )
    return msgspec.structs.replace(base, **overrides) if overrides else base


@dataclass
class RunningBox:
    app: web.Application
    runner: web.AppRunner
    url: str
    http: aiohttp.ClientSession

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/websocket/"


async def start_box(settings: Settings, clock: ServerClock | None = None) -> RunningBox:
    app = create_app(settings, clock=clock)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = listening_urls(runner)[0]
    return RunningBox(app=app, runner=runner, url=url, http=aiohttp.ClientSession(url))


async def stop_box(box: RunningBox) -> None:
    await box.http.close()
    await box.runner.cleanup()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head per test run; tests start from a copy of it (a real
    migration is still what made it; tests/store covers migrating itself)."""

    path = tmp_path_factory.mktemp("template") / "vrlms.sqlite3"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}", path)
    return path


@pytest.fixture
def settings(tmp_path: Path, migrated_template: Path) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(migrated_template, data_dir / "vrlms.sqlite3")
    return test_settings(data_dir)


@pytest.fixture
async def box(settings: Settings) -> AsyncIterator[RunningBox]:
    running = await start_box(settings)
    try:
        yield running
    finally:
        await stop_box(running)


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    url: str
    data_dir: Path


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRLMS_")}
    env.update({"VRLMS_MDNS": "off", "VRLMS_MDNS_INTERFACES": "127.0.0.1", **extra})
    return env


def spawn_serve(
    data_dir: Path, *extra_args: str, env: dict[str, str] | None = None
) -> ServeProcess:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vrlms_edge",
            "--data-dir",
            str(data_dir),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *extra_args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or cli_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"serve did not start: {line!r} {err[-2000:]}")
    return ServeProcess(proc=proc, url=line.split()[-1], data_dir=data_dir)


@pytest.fixture
def serve_process(settings: Settings) -> Iterator[ServeProcess]:
    served = spawn_serve(settings.data_dir)
    try:
        yield served
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
        served.proc.communicate(timeout=10)


@pytest.fixture
async def database(tmp_path: Path, migrated_template: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database (a copy of the template) in a temporary data directory,
    without the web app."""
    path = tmp_path / "data" / "vrlms.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_template, path)
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        yield db
    finally:
        await db.dispose()


def run_cli(
    data_dir: Path, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real `vrlms-edge` command as a subprocess on `data_dir`."""
    return subprocess.run(
        [sys.executable, "-m", "vrlms_edge", "--data-dir", str(data_dir), *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
    )
