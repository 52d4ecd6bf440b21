"""Retention: raw events past the configured age are pruned in slices; on a box enrolled
with an org server only what the outbox no longer waits for; results (summaries) stay."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, func, select, update

from tests.conftest import RunningBox
from tests.domain.test_results import T0, e, send
from tests.factories import classroom
from vrlms_edge.domain import events
from vrlms_edge.keys import BOX, CLOCK, DB
from vrlms_edge.live import tracking
from vrlms_edge.live.tracking import prune_old_events
from vrlms_edge.store.models import BoxIdentity, InteractionEvent, OutboxEntry, Result

DAY_MS = 24 * 3600 * 1000


async def count(box: RunningBox, model: type) -> int:
    async with box.app[DB].read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def age_events(box: RunningBox, seqs: range, days: int) -> None:
    old = box.app[CLOCK].now_ms() - days * DAY_MS
    async with box.app[DB].write() as s:
        await s.execute(
            update(InteractionEvent)
            .where(InteractionEvent.seq.in_(list(seqs)))
            .values(received_ms=old)
        )


async def test_old_events_are_pruned_results_stay(
    box: RunningBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = await classroom(box.app[DB])
    lesson = room.lessons[0].id
    await send(
        box,
        room,
        0,
        "r",
        [e(i, "progress", i * 1000, lesson, progress=i / 10) for i in range(1, 9)],
    )
    await age_events(box, range(1, 6), days=91)
    # Slices: a small slice size makes the pass loop.
    monkeypatch.setattr(events, "PRUNE_SLICE", 2)
    monkeypatch.setattr(tracking, "PRUNE_SLICE", 2)
    assert await prune_old_events(box.app) == 5
    async with box.app[DB].read() as s:
        left = sorted((await s.execute(select(InteractionEvent.seq))).scalars())
        result = (await s.execute(select(Result))).scalar_one()
    assert left == [6, 7, 8]
    assert result.progress == 0.8  # the summary is kept
    assert await prune_old_events(box.app) == 0


async def test_enrolled_box_keeps_events_the_outbox_still_waits_for(box: RunningBox) -> None:
    room = await classroom(box.app[DB])
    lesson = room.lessons[0].id
    async with box.app[DB].write() as s:
        await s.execute(
            update(BoxIdentity)
            .where(BoxIdentity.id == box.app[BOX].id)
            .values(enrolled_at=datetime.now(UTC), org_id=room.org.id)
        )
    await send(box, room, 0, "o", [e(1, "progress", 0, lesson, progress=0.5)])
    await age_events(box, range(1, 2), days=91)
    # The result row made by that event is still in the outbox: its event must stay.
    assert await count(box, OutboxEntry) >= 1
    now_ms = box.app[CLOCK].now_ms()
    async with box.app[DB].read() as s:
        cutoff = await events.prunable_before_ms(s, now_ms, 90)
    assert cutoff > now_ms - 91 * DAY_MS
    async with box.app[DB].write() as s:
        await s.execute(
            update(OutboxEntry).values(
                created_at=datetime.fromtimestamp(T0 / 1000 - 92 * 86400, UTC)
            )
        )
    assert await prune_old_events(box.app) == 0
    assert await count(box, InteractionEvent) == 1
    # Once the org server confirmed everything (outbox empty), the old event may go.
    async with box.app[DB].write() as s:
        await s.execute(delete(OutboxEntry))
    assert await prune_old_events(box.app) == 1
    assert await count(box, InteractionEvent) == 0
    assert await count(box, Result) == 1
