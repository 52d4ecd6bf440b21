"""Discovery time: how long a headset-side `discover(want=1)` takes to find and resolve a box,
over real multicast between two network namespaces this script creates (never on the host's
own interfaces). Needs root and iproute2.

    sudo .venv/bin/python bench/discovery_time.py [--trials 20]

Each trial opens a fresh zeroconf instance (empty cache), as a headset app does when it starts
looking; the box runs as a real `vrlms-edge serve` in the other namespace.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.discovery.netns import Lan, mdns_env, netns_available, vrlms  # noqa: E402

CLIENT = """
import asyncio, json, sys, time
from vrlms_edge.discovery.browse import discover

async def main(trials):
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        found = await discover(10.0, want=1)
        elapsed = time.perf_counter() - start
        times.append(elapsed if found else None)
        await asyncio.sleep(0.2)
    print(json.dumps(times))

asyncio.run(main(int(sys.argv[1])))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    ok, reason = netns_available()
    if not ok:
        print(f"discovery_time: {reason}", file=sys.stderr)
        return 2
    lan = Lan()
    box = None
    try:
        a, b = lan.add("a"), lan.add("b")
        with tempfile.TemporaryDirectory() as tmp:
            with Path(tmp, "box.log").open("w") as log:
                box = subprocess.Popen(
                    vrlms(a, "--data-dir", str(Path(tmp, "data")), "serve", "--port", "8080"),
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=mdns_env(),
                )
            assert box.stdout is not None
            if not box.stdout.readline().startswith("listening on "):
                print("box did not start", file=sys.stderr)
                return 1
            deadline = time.monotonic() + 15
            while "mDNS: advertising" not in Path(tmp, "box.log").read_text():
                if time.monotonic() > deadline:
                    print("box did not advertise", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            done = subprocess.run(
                ["ip", "netns", "exec", b, sys.executable, "-c", CLIENT, str(args.trials)],
                capture_output=True,
                text=True,
                env=mdns_env(),
                timeout=args.trials * 12 + 30,
            )
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            times: list[float | None] = json.loads(done.stdout)
            box.terminate()
            box.wait(timeout=10)
    finally:
        if box is not None and box.poll() is None:
            box.kill()
            box.wait(timeout=10)
        lan.close()
    found = sorted(t for t in times if t is not None)
    missed = len(times) - len(found)
    ms = [round(t * 1000) for t in found]
    print(
        f"discovery time over {len(times)} trials: p50 {statistics.median(ms):.0f} ms, "
        f"max {max(ms)} ms, min {min(ms)} ms, not found {missed}"
    )
    print(f"all, sorted (ms): {ms}")
    return 0 if not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
