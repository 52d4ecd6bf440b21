"""Auto start: sessions created with `auto_start: true` start by themselves at their time.

One loop looks for due sessions every `schedule_poll_s` and starts each as the box (no
actor). Because it asks the database rather than remembering timers, a box restarted within
a session's window still starts it; a session without `auto_start` never starts by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from vrlms_edge.domain.sessions import StateBroadcast, auto_start, due_auto_starts
from vrlms_edge.errors import AppError
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database

log = logging.getLogger(__name__)


async def start_due_sessions(
    db: Database, clock: ServerClock, broadcast: StateBroadcast, *, grace_s: int
) -> list[str]:
    """Start every session due now; the ids started. A session that cannot start (no lessons
    yet) is retried on the next pass while its window is open."""
    started = []
    for session_id in await due_auto_starts(db, now=clock.now(), grace_s=grace_s):
        try:
            state = await auto_start(db, clock, broadcast, session_id, grace_s=grace_s)
        except AppError as err:
            log.debug("auto start of session %s refused: %s", session_id, err.message)
            continue
        if state is not None:
            log.info("auto-started session %s (rev %d)", session_id, state.rev)
            started.append(session_id)
    return started


async def run_auto_starts(
    db: Database,
    clock: ServerClock,
    broadcast: Callable[[], StateBroadcast],
    *,
    poll_s: float,
    grace_s: int,
) -> None:
    """Forever: start due sessions, then sleep `poll_s`. `broadcast` is asked on every pass
    (the live hub may replace the stand-in after start-up)."""
    while True:
        try:
            await start_due_sessions(db, clock, broadcast(), grace_s=grace_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the loop alive: one bad pass must not end auto start
            log.exception("auto start pass failed")
        await asyncio.sleep(poll_s)
