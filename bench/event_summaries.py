"""Cost of event summaries on a box: how long `summarise_events` takes for a class's worth of
events, for a few new events in a live session, and with nothing new (every sync run).

Builds a throwaway box database (SQLite, migrated) with one class of S students in C sessions,
stores E events per student and session the way the batch writer does (one executemany), then
times the first pass (every event new), a pass after 1,000 more events in one session (what
a sync run during a lesson does), and an idle pass (nothing new).

    .venv/bin/python -m bench.event_summaries      # 30 students, 1 session, 3,600 events each
    .venv/bin/python -m bench.event_summaries --sessions 10 --events 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from tests.factories import TrackingRoom, classroom, make_session
from vrlms_edge.domain import event_summaries
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store import migrate
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Session, new_id

KINDS = ("gaze", "gaze", "gaze", "click", "action", "progress", "result", "lesson_start")
INSERT = (
    "INSERT INTO interaction_events (id, created_at, updated_at, org_id, device_id, user_id,"
    " session_id, lesson_id, stream, seq, kind, t_ms, received_ms, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def store_events(
    db: Database, room: TrackingRoom, session: Session, stream: str, per_student: int
) -> int:
    stamp = "2026-01-01 00:00:00.000000"
    rows = []
    for headset in room.students:
        for i in range(per_student):
            kind = KINDS[i % len(KINDS)]
            data = {"progress": i / per_student} if kind == "progress" else {"score": i}
            rows.append(
                (
                    new_id(),
                    stamp,
                    stamp,
                    room.org.id,
                    headset.device.id,
                    headset.user.id,
                    session.id,
                    room.lessons[0].id,
                    stream,
                    i + 1,
                    kind,
                    1_000_000 + i * 1000,
                    1_000_000 + i * 1000,
                    json.dumps(data),
                )
            )
    async with db.write() as s:
        await (await s.connection()).exec_driver_sql(INSERT, rows)
    return len(rows)


async def timed(db: Database, clock: ServerClock) -> tuple[float, event_summaries.SummaryReport]:
    t0 = time.perf_counter()
    report = await event_summaries.summarise_events(db, clock.now(), clock.now_ms())
    return time.perf_counter() - t0, report


async def main(students: int, sessions: int, per_student: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "box.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
        await asyncio.to_thread(migrate.upgrade, url, path)
        db = Database(url)
        clock = ServerClock()
        try:
            room = await classroom(db, students=students, lessons=1)
            all_sessions = [room.session] + [
                await make_session(db, room.org, room.klass, room.lessons)
                for _ in range(sessions - 1)
            ]
            total = 0
            for n, session in enumerate(all_sessions):
                total += await store_events(db, room, session, f"s{n}", per_student)
            first_s, first = await timed(db, clock)
            print(
                f"first pass: {first.events} events of {sessions} session(s), {first.changed}"
                f" summaries in {first_s * 1000:.0f} ms ({total / first_s:,.0f} events/s)"
            )
            added = await store_events(db, room, all_sessions[0], "more", 1000 // students)
            update_s, update = await timed(db, clock)
            print(
                f"after {added} new events in one session: {update.events} counted,"
                f" {update.changed} summaries changed"
                f" in {update_s * 1000:.0f} ms"
            )
            idle_s, idle = await timed(db, clock)
            print(f"nothing new: {idle.changed} changed in {idle_s * 1000:.1f} ms")
            assert total + added == first.events + update.events
        finally:
            await db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--events", type=int, default=3600, help="events per student and session")
    args = parser.parse_args()
    asyncio.run(main(args.students, args.sessions, args.events))
