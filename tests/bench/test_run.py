"""The runner's hold on the machine's idle policy, and how the report states it."""

from __future__ import annotations

import os
import struct

from bench import report
from bench.run import CPU_LATENCY, cores_awake
from tests.conftest import need


def cpu_latency_request() -> int:
    """The CPU latency the kernel keeps to now (the strictest request held), µs."""
    fd = os.open(CPU_LATENCY, os.O_RDONLY)
    try:
        (value,) = struct.unpack("=i", os.read(fd, 4))
    finally:
        os.close(fd)
    return int(value)


def test_idle_cores_poll_while_the_run_holds_the_request_and_not_after() -> None:
    need(CPU_LATENCY.exists() and os.geteuid() == 0, f"{CPU_LATENCY} writable (root)")
    before = cpu_latency_request()
    need(before > 0, "no other CPU latency request held (a bench run holds one)")

    with cores_awake(True) as idle:
        assert idle == "poll"
        assert cpu_latency_request() == 0
    assert cpu_latency_request() == before

    with cores_awake(False) as idle:
        assert idle == "default"
        assert cpu_latency_request() == before


def test_the_report_says_which_idle_policy_the_run_had() -> None:
    run = {"machine_before": {"cpuidle": "haltpoll"}}
    assert "Idle cores poll instead of halting" in report.idle_policy(run | {"idle": "poll"})
    assert report.idle_policy(run | {"idle": "default"}) == (
        " Idle cores: default policy, cpuidle driver haltpoll."
    )
    assert report.idle_policy(run) == ""  # runs from before the runner recorded it
