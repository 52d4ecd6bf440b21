"""The load generator against bench/floor.py, small: the bench code must keep working."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import loadgen, report
from bench.run import box_target, read_listening, running

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def floor() -> Iterator[dict[str, Any]]:
    cmd = [sys.executable, str(ROOT / "bench" / "floor.py"), "--port", "0"]
    with running(cmd, stdout=subprocess.PIPE) as proc:
        port = read_listening(proc, timeout=20)
        base = f"ws://127.0.0.1:{port}/ws/session/t/?token="
        yield {
            "name": "floor",
            "session_id": "t",
            "teacher_url": base + "teacher",
            "headset_urls": [base + f"h{i}" for i in range(6)],
            "pids": {"server": proc.pid},
            "port": port,
        }


def test_fanout_against_the_floor_counts_every_delivery(floor: dict[str, Any]) -> None:
    result = loadgen.run_workload(floor, "w1", 5, 1, commands=10, rate=20.0)

    assert result["connect"]["connected"] == 5
    assert result["connect"]["failed"] == 0
    assert result["connect"]["refused"] == {}
    fan = result["fanout"]
    assert fan["commands"] == 10
    assert fan["expected"] == 50
    assert fan["deliveries"] == 50
    assert fan["lost"] == 0
    assert 0 < fan["p50_ms"] <= fan["p99_ms"] <= fan["max_ms"] < 2000
    # A state reaches a headset's socket (the kernel's stamp) before the worker reads it.
    assert fan["p50_ms"] <= fan["read_p50_ms"] and fan["p99_ms"] <= fan["read_p99_ms"]
    assert fan["teacher_errors"] == 0
    assert fan["cpu_s"]["server"] >= 0
    assert result["rss_connected_mb"] > 5

    # The table renders from these figures.
    table = report.markdown(
        {
            "date": "d",
            "commit": "c",
            "command": "x",
            "mode": "quick",
            "plan": {"sizes": [5], "capacity_n": 300},
            "targets": {"floor": {"w1": {"5": result}, "rss_idle_mb": 30.0}},
        }
    )
    assert f"| N=5 (10 cmds) p50 / p99 / max ms | - | - | - | {fan['p50_ms']:.1f} /" in table


def test_a_stalled_headset_does_not_count_as_released_while_the_server_holds_it(
    floor: dict[str, Any],
) -> None:
    result = loadgen.run_workload(floor, "w4", 5, 1, commands=5, rate=20.0, cutoff_wait_s=0.3)

    assert result["lost"] == 0  # the floor has no bound: the stalled one is kept, others served
    assert result["stalled_cut_off_after_s"] is None


def test_a_train_faster_than_the_flood_bound_goes_round_teacher_connections(
    tmp_path: Path,
) -> None:
    # 500 commands in 2 s: over one connection the box would close it (1008, more than
    # ~100 frames/s); the generator spreads them so the ramp measures fan-out, not the bound.
    assert loadgen.teachers_for(20.0) == 1 and loadgen.teachers_for(250.0) == 4
    with box_target(5, tmp_path) as box:
        result = loadgen.run_workload(
            box, "w1", 5, 1, commands=5, rate=20.0, capacity_rates=[250], capacity_step_s=2.0
        )

    (step,) = result["capacity"]["steps"]
    assert step["commands"] == 500
    assert step["lost"] == 0
    assert step["teacher_errors"] == 0
