"""AttendanceLog: one batch of joins, leaves and sightings written in one transaction."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from tests.conftest import RunningBox
from tests.factories import fresh_slug, make_classroom
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.live.attendance import AttendanceLog
from vrlms_edge.store.models import Attendance, Device


async def test_one_batch_opens_closes_rows_and_keeps_the_newest_sighting(
    box: RunningBox,
) -> None:
    db, clock = box.app[DB], box.app[CLOCK]
    room = await make_classroom(db, clock, students=2, slug=fresh_slug())
    first, second = room.headsets
    log = AttendanceLog(db, clock)
    # Queued before the writer starts, so all of it is one batch.
    row_a = log.join(room.org.id, room.session.id, first.user.id, first.device.id)
    row_b = log.join(room.org.id, room.session.id, second.user.id, second.device.id)
    log.leave(row_a)
    log.seen(first.device.id)
    await asyncio.sleep(0.01)
    log.seen(first.device.id)
    newest = clock.now()
    log.start()
    await asyncio.wait_for(log.flushed(), 10)
    await log.stop()

    async with db.read() as s:
        rows = {
            r.id: r
            for r in (
                await s.execute(select(Attendance).where(Attendance.org_id == room.org.id))
            ).scalars()
        }
        device = await s.get(Device, first.device.id)
        other = await s.get(Device, second.device.id)
    assert set(rows) == {row_a, row_b}
    assert rows[row_a].left_at is not None and rows[row_a].left_at >= rows[row_a].joined_at
    assert rows[row_b].left_at is None
    assert (rows[row_b].user_id, rows[row_b].device_id) == (second.user.id, second.device.id)
    assert device is not None and device.last_seen_at is not None
    assert rows[row_a].joined_at < device.last_seen_at <= newest
    assert other is not None and other.last_seen_at is None
