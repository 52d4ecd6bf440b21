"""Time from a headset's `status` frame to its dashboard tile showing it, in the real Chromium.

A real `vrlms-edge serve` with the demo school on 127.0.0.1; the teacher's session page open
in headless Chromium (Playwright, /usr/bin/chromium); one reference headset sends `status`
with a new battery level each time and the script waits until the tile shows it. The figure
includes the box's class-picture coalescing (live/hub.py CLASS_PICTURE_INTERVAL_S).

    .venv/bin/python bench/dashboard_latency.py [--changes 100] [--gap-ms 0]

Back to back (gap 0) every change lands within one picture interval of the previous picture,
so the figure is the rate cap; with a gap longer than the interval it is the leading edge.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright

from vrlms_edge.headset.client import Credentials, HeadsetClient

CHROMIUM = "/usr/bin/chromium"


def start_box(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "VRLMS_MDNS": "off"}
    run = [sys.executable, "-m", "vrlms_edge", "--data-dir", str(data_dir)]
    subprocess.run([*run, "demo"], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        [*run, "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the box did not start: {line!r}")
    return proc, line.split()[-1]


async def demo_session(url: str) -> str:
    async with aiohttp.ClientSession(url) as http:
        async with http.post("/api/login/", json={"nickname": "teacher", "pin": "1234"}) as r:
            token = (await r.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get("/api/sessions/", headers=headers) as r:
            session_id: str = (await r.json())["sessions"][0]["id"]
        async with http.get("/api/me/", headers=headers) as r:
            await r.read()
    return session_id


async def measure(url: str, changes: int, gap_s: float) -> list[float]:
    session_id = await demo_session(url)
    headset = HeadsetClient(url, credentials=Credentials("student01", "1001", "DEMO-HS-01"))
    stop = asyncio.Event()
    task = asyncio.create_task(headset.run(stop))
    latencies: list[float] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = await browser.new_page()
        await page.goto(url + "/login/")
        await page.fill("#nickname", "teacher")
        await page.fill("#password", "teacher-demo-pass")
        await page.click("button[type=submit]")
        await page.wait_for_url("**/dashboard/")
        await page.goto(f"{url}/dashboard/sessions/{session_id}")
        await page.wait_for_selector("#tiles .tile.online", timeout=20_000)
        tile = "#tiles .tile.online [data-f=battery]"
        for i in range(changes):
            await asyncio.sleep(gap_s)
            percent = 5 + (i % 90)
            if i and percent == 5 + ((i - 1) % 90):
                percent += 1
            started = time.perf_counter()
            await headset.send_status(battery=percent / 100, app="com.vrlms.solarsystem.sun")
            await page.wait_for_function(
                f"document.querySelector('{tile}')?.textContent === '{percent} %'",
                polling=2,
                timeout=10_000,
            )
            latencies.append((time.perf_counter() - started) * 1000)
        await browser.close()
    stop.set()
    task.cancel()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--gap-ms", type=int, default=0, help="pause between changes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vrlms-dash-") as tmp:
        proc, url = start_box(Path(tmp) / "data")
        try:
            latencies = asyncio.run(measure(url, args.changes, args.gap_ms / 1000))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"status -> tile over {len(ordered)} changes, {args.gap_ms} ms apart: "
        f"p50 {statistics.median(ordered):.0f} ms, p99 {p99:.0f} ms, max {ordered[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
