"""The benchmark runner behind `make bench`: starts each target in turn (the box, the Django
Channels peer with the InMemory and the redis channel layer, the bare aiohttp floor), drives
it with bench/loadgen.py, and writes bench/results/<date>.json, bench/results/<date>.md and
the README's Benchmarks table.

    python -m bench.run            # quick: under 5 minutes
    python -m bench.run --full     # the whole matrix of issue 11
    python -m bench.run --only box,floor --sizes 30,100

Every server is started here on a free loopback port and stopped before the next one starts,
so targets never compete with each other; the generator shares the machine's cores with them.
A class-sized workload (one generator process, well under a core) runs with the server side
(with the peer's redis-server) pinned to the first core and the generator to the others, so
neither preempts the other; bigger loads need more than one generator core and all float
(`--no-pin`: always float). For the whole run it asks the kernel to keep idle cores polling
instead of halting (`cores_awake`; `--idle default` leaves the machine's idle policy alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from bench import loadgen, report

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEER_DIR = BENCH / "peer"
PEER_VENV = BENCH / ".venv-peer"
PEER_PACKAGES = ["django", "channels", "daphne", "channels-redis"]
RESULTS = BENCH / "results"
START_TIMEOUT_S = 60.0
TARGETS = ("box", "peer-memory", "peer-redis", "floor")
# Linux PM QoS: a CPU latency request, held while the file stays open.
CPU_LATENCY = Path("/dev/cpu_dma_latency")
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args!r} did not listen on {port} within {timeout} s")


def read_listening(proc: subprocess.Popen[str], timeout: float = START_TIMEOUT_S) -> int:
    """Port from the `listening on http://HOST:PORT` line our servers print when ready."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{proc.args!r} exited before listening ({proc.poll()})")
        found = re.search(r"listening on http://[^:]+:(\d+)", line)
        if found:
            return int(found.group(1))
    raise RuntimeError(f"{proc.args!r} did not announce its port")


@contextlib.contextmanager
def running(cmd: list[str], **kw: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(cmd, text=True, start_new_session=True, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class Cores(NamedTuple):
    """Where the servers under test run and where the load generator runs."""

    server: set[int]
    generator: set[int]


def split_cores(pin: bool) -> Cores | None:
    """The first core for the servers, the rest for the generator; None when not pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None
    return Cores(set(cpus[:1]), set(cpus[1:]))


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` on `cpus` (threads it starts later inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task), cpus)


@contextlib.contextmanager
def placed(target: dict[str, Any], cores: Cores | None, procs: int) -> Iterator[bool]:
    """The server side and this process (and the headset workers it spawns) on their own
    cores for a one-generator-process workload; otherwise everything floats. Yields whether
    it pinned."""
    if cores is None or procs > 1:
        yield False
        return
    every = cores.server | cores.generator
    for pid in target["pids"].values():
        set_affinity(pid, cores.server)
    os.sched_setaffinity(0, cores.generator)
    try:
        yield True
    finally:
        os.sched_setaffinity(0, every)
        for pid in target["pids"].values():
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                set_affinity(pid, every)


@contextlib.contextmanager
def cores_awake(wanted: bool) -> Iterator[str]:
    """Hold a CPU latency request of 0 µs for the run, so an idle core polls instead of
    halting: on a VM a halted vCPU waits for the hypervisor to run it again when a packet
    comes (up to 4 ms on the one of bench/README.md), and a server sleeping 50 ms between
    commands may pay that on any of them, whatever its design. Every target runs under it
    alike. Yields the idle policy the run had, for the report."""
    if not wanted:
        yield "default"
        return
    try:
        fd = os.open(CPU_LATENCY, os.O_WRONLY)
    except OSError as exc:
        yield f"default (no {CPU_LATENCY}: {exc.strerror})"
        return
    try:
        os.write(fd, struct.pack("=i", 0))
        yield "poll"
    finally:
        os.close(fd)  # the request ends with it


def ensure_peer_venv() -> Path:
    """bench/.venv-peer with the peer's packages from PyPI: never the product's venv."""
    python = PEER_VENV / "bin" / "python"
    if not (PEER_VENV / "bin" / "daphne").exists():
        venv.create(PEER_VENV, with_pip=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True, timeout=600
        )
    return python


def versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({p: m.version(p) for p in ['django','channels','daphne',"
        "'channels-redis','twisted']}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


# ---------------------------------------------------------------- targets


@contextlib.contextmanager
def box_target(students: int, workdir: Path) -> Iterator[dict[str, Any]]:
    data = workdir / "box"
    setup = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.box_setup",
            "--data-dir",
            str(data),
            "--students",
            str(students),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    made = json.loads(setup.stdout)
    env = {**os.environ, "VRLMS_MDNS": "off", "VRLMS_LOG_LEVEL": "WARNING"}
    exe = shutil.which("vrlms-edge", path=str(Path(sys.executable).parent)) or "vrlms-edge"
    cmd = [exe, "--data-dir", str(data), "serve", "--host", "127.0.0.1", "--port", "0"]
    with running(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE) as proc:
        port = read_listening(proc)
        base = f"ws://127.0.0.1:{port}/websocket/?token="
        yield {
            "name": "box",
            "session_id": made["session_id"],
            "teacher_url": base + made["teacher_token"],
            "headset_urls": [base + t for t in made["student_tokens"]],
            "pids": {"server": proc.pid},
            "port": port,
            "stall_bound": "ws_send_stall_s after the socket fills, or silence for 2 x heartbeat_s",
        }


@contextlib.contextmanager
def peer_target(students: int, workdir: Path, layer: str) -> Iterator[dict[str, Any]]:
    python = ensure_peer_venv()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "peer_site.settings",
        "PEER_DB": str(workdir / f"peer-{layer}.sqlite3"),
        "PEER_LAYER": layer,
        "PYTHONPATH": str(PEER_DIR),
    }
    with contextlib.ExitStack() as stack:
        pids: dict[str, int] = {}
        if layer == "redis":
            redis_port = free_port()
            env["PEER_REDIS_PORT"] = str(redis_port)
            redis = stack.enter_context(
                running(
                    [
                        "redis-server",
                        "--port",
                        str(redis_port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(workdir),
                        "--save",
                        "",
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            wait_port(redis_port, redis)
            pids["redis"] = redis.pid
        manage = [str(python), str(PEER_DIR / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=300)
        setup = subprocess.run(
            [*manage, "bench_setup", "--students", str(students)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        made = json.loads(setup.stdout)
        port = free_port()
        daphne = stack.enter_context(
            running(
                [
                    str(python),
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "peer_site.asgi:application",
                ],
                cwd=PEER_DIR,
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        wait_port(port, daphne)
        pids["server"] = daphne.pid
        base = f"ws://127.0.0.1:{port}/ws/session/{made['session_id']}/?token="
        yield {
            "name": f"peer-{layer}",
            "session_id": made["session_id"],
            "teacher_url": base + made["teacher_token"],
            "headset_urls": [base + t for t in made["student_tokens"]],
            "pids": pids,
            "port": port,
        }


@contextlib.contextmanager
def floor_target(students: int, workdir: Path) -> Iterator[dict[str, Any]]:
    cmd = [sys.executable, str(BENCH / "floor.py"), "--port", "0"]
    with running(cmd, stdout=subprocess.PIPE) as proc:
        port = read_listening(proc)
        base = f"ws://127.0.0.1:{port}/ws/session/floor/?token="
        yield {
            "name": "floor",
            "session_id": "floor",
            "teacher_url": base + "teacher",
            "headset_urls": [base + f"h{i}" for i in range(students)],
            "pids": {"server": proc.pid},
            "port": port,
        }


@contextlib.contextmanager
def delay_proxy(port: int) -> Iterator[int]:
    cmd = [sys.executable, str(BENCH / "delayproxy.py"), "--target", f"127.0.0.1:{port}"]
    with running(cmd, stdout=subprocess.PIPE) as proc:
        yield read_listening(proc)


def start_target(name: str, students: int, workdir: Path) -> Any:
    if name == "box":
        return box_target(students, workdir)
    if name == "floor":
        return floor_target(students, workdir)
    return peer_target(students, workdir, name.removeprefix("peer-"))


# ---------------------------------------------------------------- the matrix


def plan(full: bool, sizes: list[int] | None) -> dict[str, Any]:
    """What each workload runs; quick trims counts so the whole run stays under 5 minutes."""
    return {
        "sizes": sizes or [30, 100, 300, 1000],
        "commands": 100 if full else 50,
        "commands_1000": 100 if full else 20,
        "w1_warmup": loadgen.W1_WARMUP_COMMANDS,  # commands before each W1 train, not counted
        "drain_s": 10.0 if full else 5.0,  # deliveries later than this after the train: lost
        "rate": 20.0,
        "capacity_n": 300,
        "capacity_rates": [5, 10, 20, 40, 80, 160] if full else [5, 10, 20, 40, 80],
        "capacity_step_s": 2.0 if full else 1.0,
        "w3_commands": 60 if full else 30,
        "w4_commands": 50 if full else 25,  # per train
        "w4_pairs": 5 if full else 4,  # stalled + baseline trains
        "w5_n": 300,
        "w6_n": 30,
        "w6_trials": 10 if full else 2,
        # Quick mode trims the redis peer to one size: its shape matches InMemory's.
        "sizes_by_target": {} if full else {"peer-redis": [300]},
        # Workloads beyond W1 per target in quick mode: ours and the peer as most deploy it.
        "extras": TARGETS if full else ("box", "peer-memory"),
        # W5 also on the floor in quick mode: what reconnecting costs the generator alone.
        "w5_targets": TARGETS if full else ("box", "peer-memory", "floor"),
    }


def settle(target: dict[str, Any], limit_s: float = loadgen.IDLE_WAIT_S) -> float:
    """Wait until the server is idle (loadgen.server_idle: < 10 % of a core over 0.5 s) so one
    workload's backlog does not bleed into the next; bounded. Returns the seconds waited."""
    return asyncio.run(loadgen.server_idle(target["pids"]["server"], limit_s)) or 0.0


def procs_for(n: int) -> int:
    """Generator processes: one is enough for a class; two share bigger loads (2 cores)."""
    return 1 if n <= 100 else 2


def bench_target(
    name: str, p: dict[str, Any], workdir: Path, cores: Cores | None, log: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"w1": {}}

    def workload(workload: str, n: int, procs: int, **opts: Any) -> dict[str, Any]:
        with placed(target, cores, procs) as pinned:
            result = loadgen.run_workload(target, workload, n, procs, **opts)
        result["pinned"] = pinned
        return result

    students = max(p["sizes"] + [p["w5_n"], p["w6_n"]]) + 2
    t0 = time.monotonic()
    with start_target(name, students, workdir) as target:
        time.sleep(0.5)
        pid = target["pids"]["server"]
        out["rss_idle_mb"] = round(loadgen.rss_mb(pid), 1)
        log(f"{name}: up, RSS {out['rss_idle_mb']} MB")
        for n in p["sizes_by_target"].get(name, p["sizes"]):
            cmds = p["commands_1000"] if n >= 1000 else p["commands"]
            opts: dict[str, Any] = {
                "commands": cmds,
                "rate": p["rate"],
                "drain_s": p["drain_s"],
                "warmup": p["w1_warmup"],
            }
            if n == p["capacity_n"]:
                opts.update(
                    capacity_rates=p["capacity_rates"], capacity_step_s=p["capacity_step_s"]
                )
            settle(target)
            r = workload("w1", n, procs_for(n), **opts)
            out["w1"][str(n)] = r
            f = r["fanout"]
            log(
                f"{name} W1 n={n}: p50 {f['p50_ms']} p99 {f['p99_ms']} max {f['max_ms']} ms, "
                f"lost {f['lost']}, cpu {f['cpu_s']}"
            )
        if name in p["extras"]:
            out.setdefault("settle_s", []).append(settle(target))
            out["w3"] = workload("w3", 30, 1, commands=p["w3_commands"], rate=10.0)
            log(f"{name} W3: p99 {out['w3']['p99_ms']} ms")
            cutoff_wait = 25.0 if name == "box" else 2.0
            out.setdefault("settle_s", []).append(settle(target))
            out["w4"] = workload(
                "w4",
                30,
                1,
                commands=p["w4_commands"],
                pairs=p["w4_pairs"],
                rate=p["rate"],
                cutoff_wait_s=cutoff_wait,
            )
            w4 = out["w4"]
            log(
                f"{name} W4: p99 {w4['p99_ms']} vs {w4['baseline_p99_ms']} ms, "
                f"cut {w4['stalled_cut_off_after_s']}"
            )
            out.setdefault("settle_s", []).append(settle(target))
            out["w6"] = workload("w6", p["w6_n"], 1, trials=p["w6_trials"])
            with delay_proxy(target["port"]) as proxy_port:
                out["w6_proxy"] = workload(
                    "w6",
                    p["w6_n"],
                    1,
                    trials=p["w6_trials"],
                    proxy_port=proxy_port,
                    settle_s=1.5,
                )
            log(
                f"{name} W6: skew p99 {out['w6']['skew_p99_ms']} ms loopback, "
                f"{out['w6_proxy']['skew_p99_ms']} ms via jitter proxy"
            )
        if name in p["w5_targets"]:
            out.setdefault("settle_s", []).append(settle(target))
            out["w5"] = workload("w5", p["w5_n"], procs_for(p["w5_n"]))
            log(f"{name} W5: all have state after {out['w5']['all_have_state_s']} s")
    out["wall_s"] = round(time.monotonic() - t0, 1)
    return out


# W2 modes: the headset protocol (one `event` per WebSocket frame), the offline upload
# (POST /api/events/ batches), and in --full the bare-aiohttp WebSocket floor (no database).
INGEST_MODES_QUICK = (("", ["--mode", "ws"]), ("rest_", ["--mode", "rest"]))
INGEST_MODES_FULL = (*INGEST_MODES_QUICK, ("floor_", ["--mode", "ws", "--floor"]))


def run_ingest(full: bool, log: Any) -> dict[str, Any] | None:
    """W2 is bench/ingest.py: run it per mode and read its table rows (columns by the header
    line: `headsets sync sent acked events/s p50 ms p99 ms ...`)."""
    script = BENCH / "ingest.py"
    if not script.exists():
        return None
    out: dict[str, Any] = {"commands": []}
    for prefix, mode in INGEST_MODES_FULL if full else INGEST_MODES_QUICK:
        cmd = [sys.executable, str(script), "--headsets", "300", "--sync", "NORMAL,FULL", *mode]
        cmd += [] if full else ["--seconds", "3"]
        out["commands"].append(" ".join(cmd[1:]))
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            out["error"] = f"{' '.join(mode)}: bench/ingest.py took longer than 300 s"
            continue
        if done.returncode != 0:
            log(f"W2 ingest {' '.join(mode)} failed: {done.stderr[-500:]}")
            out["error"] = done.stderr[-2000:]
        for key, row in ingest_rows(done.stdout).items():
            out[prefix + key] = row
            log(f"W2 {prefix + key}: {row['events_per_s']:.0f} events/s, p99 {row['p99_ms']} ms")
    return out


def ingest_rows(stdout: str) -> dict[str, dict[str, Any]]:
    """{"normal"|"full": figures} from bench/ingest.py's table."""
    found: dict[str, dict[str, Any]] = {}
    header: list[str] = []
    for line in stdout.splitlines():
        if "events/s" in line:
            for spaced in ("p50 ms", "p99 ms", "srv cpu%", "client cpu%"):
                line = line.replace(spaced, spaced.replace(" ", "_"))
            header = line.split()
            continue
        cells = line.split()
        if header and len(cells) == len(header) and cells[1].upper() in ("NORMAL", "FULL"):
            row = dict(zip(header, cells, strict=True))
            with contextlib.suppress(KeyError, ValueError):
                found[cells[1].lower()] = {
                    "headsets": int(row["headsets"]),
                    "acked": int(row["acked"]),
                    "events_per_s": float(row["events/s"]),
                    "p50_ms": float(row["p50_ms"]),
                    "p99_ms": float(row["p99_ms"]),
                    "server_us_per_event": float(row.get("us/event", "nan")),
                }
    return found


def machine_idle(limit_s: float = 20.0) -> float:
    """Wait until the whole machine is idle (< 15 % of its CPU time busy over 0.5 s), so what
    the previous target left behind (processes exiting, the kernel closing sockets) is not
    measured as the next one's cost; bounded. Returns the seconds waited."""

    def busy_idle() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, idle

    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        b0, i0 = busy_idle()
        time.sleep(0.5)
        b1, i1 = busy_idle()
        if (b1 - b0) <= 0.15 * max(1, (b1 - b0) + (i1 - i0)):
            break
    return round(time.monotonic() - t0, 1)


def machine() -> dict[str, Any]:
    others = 0
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "R":
                    others += 1
    return {
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "runnable_processes": others,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpuidle": CPUIDLE_DRIVER.read_text().strip() if CPUIDLE_DRIVER.exists() else None,
    }


def git_commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "vrlms_edge"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the whole matrix (longer)")
    parser.add_argument("--only", help=f"comma list of targets ({', '.join(TARGETS)})")
    parser.add_argument("--sizes", help="comma list of W1 sizes (default 30,100,300,1000)")
    parser.add_argument("--w1-only", action="store_true", help="skip W3-W6 (trials)")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument(
        "--no-pin", action="store_true", help="servers and generator float over all cores"
    )
    parser.add_argument(
        "--idle",
        choices=("poll", "default"),
        default="poll",
        help="idle cores poll for the run (PM QoS, see cores_awake) or keep the machine's policy",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else None
    names = args.only.split(",") if args.only else list(TARGETS)
    p = plan(args.full, sizes)
    if sizes:
        p["sizes_by_target"] = {}
    if args.w1_only:
        p["extras"] = p["w5_targets"] = ()
    cores = split_cores(not args.no_pin)
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)

    now = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "date": now.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "mode": "full" if args.full else "quick",
        "plan": p,
        "cores": {k: sorted(v) for k, v in cores._asdict().items()} if cores else None,
        "machine_before": machine(),
        "peer_versions": versions(PEER_VENV / "bin" / "python") if PEER_VENV.exists() else {},
        "targets": {},
    }
    with (
        cores_awake(args.idle == "poll") as idle,
        tempfile.TemporaryDirectory(prefix="vrlms-bench-") as tmp,
    ):
        results["idle"] = idle
        for name in names:
            workdir = Path(tmp) / name
            workdir.mkdir()
            results.setdefault("idle_waits_s", {})[name] = machine_idle()
            try:
                results["targets"][name] = bench_target(name, p, workdir, cores, log)
            except Exception as exc:  # one target failing must not lose the others' figures
                log(f"{name} FAILED: {exc!r}")
                results["targets"][name] = {"error": repr(exc)}
        if "peer-memory" in names and not results["peer_versions"]:
            results["peer_versions"] = versions(PEER_VENV / "bin" / "python")
        results.setdefault("idle_waits_s", {})["w2"] = machine_idle()
        results["w2_ingest"] = run_ingest(args.full, log)
    results["machine_after"] = machine()
    results["wall_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = now.strftime("%Y-%m-%dT%H%M")
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    table = report.markdown(results)
    (args.out / f"{stem}.md").write_text(table)
    if not args.no_readme:
        report.update_readme(ROOT / "README.md", table, f"bench/results/{stem}.md")
    print(table)
    log(f"wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    main()
