"""The class simulator against a real box with the demo school, in-process and as the
`vrlms-edge simulate` command."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningBox, cli_env, run_cli, spawn_serve
from vrlms_edge.domain.demo import load_demo
from vrlms_edge.headset.simulate import SimulationConfig, roster_rows, simulate
from vrlms_edge.keys import DB, HUB


async def test_simulated_class_follows_the_teacher(box: RunningBox) -> None:
    await load_demo(box.app[DB])
    progress = io.StringIO()
    config = SimulationConfig(
        url=box.url, students=3, duration_s=2.5, cycle_s=1.0, event_rate=5, view_every_s=0.5
    )
    report = await simulate(config, progress)
    summary = report.summary()
    assert summary["headsets"] == 3 and not report.login_failures
    assert summary["starts"] >= 2
    assert summary["reconnects"] == 0
    # Every headset applied every rev the teacher made, and started near each anchor.
    assert len(report.skews_ms) == 3 * report.starts
    assert summary["skew_p99_ms"] < 100
    assert len(report.delivery_ms) >= 3 * 3
    last = max(a.rev for h in report.headsets for a in h.stats.applied)
    assert all(h.stats.applied[-1].rev == last for h in report.headsets)
    assert all(h.stats.views_sent > 0 and h.stats.status_sent > 0 for h in report.headsets)
    # Without an event ingest on this box, events are answered not_available, never 1008.
    assert all(set(h.stats.close_codes) <= {0, 1000} for h in report.headsets)
    assert "connected 3/3" in progress.getvalue()
    assert "student03" in report.table()
    # The box saw the views.
    assert box.app[HUB].frame_of(report.headsets[0].welcome.device.id) is not None  # type: ignore[union-attr]


def test_roster_rows_extend_the_demo_school() -> None:
    rows = roster_rows(31, 33).splitlines()
    assert rows == [
        "class,nickname,display_name,role,pin,device_id",
        "Demo Class,student31,Student 31,student,1031,DEMO-HS-31",
        "Demo Class,student32,Student 32,student,1032,DEMO-HS-32",
        "Demo Class,student33,Student 33,student,1033,DEMO-HS-33",
    ]


@pytest.mark.slow
def test_simulate_command_against_served_box(tmp_path: Path) -> None:
    """The command end to end: three imported students follow a served box (no teacher)."""
    data = tmp_path / "data"
    imported = run_cli(data, "import-roster", "-", stdin=roster_rows(1, 3))
    assert imported.returncode == 0, imported.stderr
    served = spawn_serve(data)
    try:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "vrlms_edge", "simulate", "--url", served.url),
                *("--students", "3", "--duration", "1", "--teacher", "", "--table"),
            ],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
        )
    finally:
        served.proc.terminate()
        served.proc.communicate(timeout=10)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "student03" in done.stdout and "rtt_p50_ms" in done.stdout
    assert "connected 3/3" in done.stderr
