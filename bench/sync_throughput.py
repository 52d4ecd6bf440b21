"""Sync throughput of one org server worker: how fast a box's outbox drains.

Starts a throwaway PostgreSQL cluster (as tests do), one `vrlms-edge cloud serve` process on
it, and an enrolled box in this process; queues N results on the box (as a batch writer
would), then times `sync_once` until the outbox is empty. Prints results/s and the drain time.

    .venv/bin/python -m bench.sync_throughput                 # 10,000 results, pages of 200
    .venv/bin/python -m bench.sync_throughput --results 10000 --page-size 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from tests.conftest import stop_box, test_settings
from tests.orgserver import (
    enrolled_box,
    make_results,
    seed_org,
    spawn_cloud,
    start_cluster,
    stop_cluster,
)
from vrlms_edge.cloud.store import OrgDatabase
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.store.models import OutboxEntry, Result
from vrlms_edge.sync.worker import sync_once


class _Cloud:
    def __init__(self, url: str, db: OrgDatabase) -> None:
        self.url = url
        self.db = db


async def bench(results: int, page_size: int) -> None:
    cluster = await asyncio.to_thread(start_cluster)
    tmp = Path(tempfile.mkdtemp(prefix="vrlms-bench-"))
    proc = None
    try:
        url = await cluster.new_database()
        cloud_proc = spawn_cloud(url, tmp / "cloud")
        proc, cloud_url = cloud_proc.proc, cloud_proc.url
        db = OrgDatabase(url)
        world = await seed_org(db, "bench", students=30)
        box = await enrolled_box(_Cloud(cloud_url, db), world, tmp / "box")  # type: ignore[arg-type]
        settings = test_settings(tmp / "box", sync_worker=False, sync_page_size=page_size)
        try:
            t0 = time.perf_counter()
            await make_results(box.app[DB], world, results)
            queued_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = await sync_once(box.app[DB], settings, box.app[CLOCK])
            drain_s = time.perf_counter() - t0
            async with box.app[DB].read() as s:
                left = (await s.execute(select(func.count()).select_from(OutboxEntry))).scalar_one()
            async with db.read() as s:
                held = (await s.execute(select(func.count()).select_from(Result))).scalar_one()
        finally:
            await stop_box(box)
            await db.dispose()
        assert left == 0 and held == results, (left, held)
        print(f"results: {results}, page size: {page_size}, push pages: {report.push_pages}")
        print(f"queue on box (one batch): {queued_s:.2f} s")
        print(f"drain outbox: {drain_s:.2f} s  ->  {results / drain_s:,.0f} results/s")
        print(f"cpu: {os.cpu_count()} cores (box, org server and PostgreSQL share them)")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        await asyncio.to_thread(stop_cluster, cluster)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(bench(args.results, args.page_size))


if __name__ == "__main__":
    main()
