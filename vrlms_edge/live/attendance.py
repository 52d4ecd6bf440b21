"""Attendance and presence records, written in the background so the hub never awaits the
database: join/leave rows of the Attendance table and devices' last_seen_at.

The hub calls `join`/`leave`/`seen` (plain calls, no await); one task writes them in order,
a batch per transaction. Row ids are made up front, so a leave can follow its join before
either is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Attendance, Device, new_id
from vrlms_edge.store.raw import RawTable
from vrlms_edge.sync.outbox import enqueue_raw, row_payload

log = logging.getLogger(__name__)

# Writes per transaction: a class of 30 joining at once is one transaction, a box of 300 ten.
BATCH: Final = 32


@dataclass(frozen=True, slots=True)
class _Join:
    row_id: str
    org_id: str
    session_id: str
    user_id: str
    device_pk: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class _Leave:
    row_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class _Seen:
    device_pk: str
    at: datetime


_Op = _Join | _Leave | _Seen


class AttendanceLog:
    def __init__(self, db: Database, clock: ServerClock) -> None:
        self._db = db
        self._clock = clock
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def join(self, org_id: str, session_id: str, user_id: str, device_pk: str | None) -> str:
        row_id = new_id()
        self._queue.put_nowait(
            _Join(row_id, org_id, session_id, user_id, device_pk, self._clock.now())
        )
        return row_id

    def leave(self, row_id: str) -> None:
        self._queue.put_nowait(_Leave(row_id, self._clock.now()))

    def seen(self, device_pk: str) -> None:
        self._queue.put_nowait(_Seen(device_pk, self._clock.now()))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="attendance-log")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def flushed(self) -> None:
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            ops = [await self._queue.get()]
            while len(ops) < BATCH and not self._queue.empty():
                ops.append(self._queue.get_nowait())
            try:
                await self._write(ops)
            except Exception:  # a bad row must not stop presence recording for everyone
                log.exception("attendance batch of %d failed", len(ops))
            finally:
                for _ in ops:
                    self._queue.task_done()

    async def _write(self, ops: list[_Op]) -> None:
        await self._db.write_raw(lambda conn: _write_ops(conn, ops))


_ATTENDANCE: Final = RawTable(Attendance)
_DEVICES: Final = RawTable(Device)


def _write_ops(conn: sqlite3.Connection, ops: list[_Op]) -> None:
    """One batch in one transaction of the hot write lane (a storm of 300 reconnecting
    headsets is ten of these, not thousands of ORM statements)."""
    touched: dict[str, Attendance] = {}
    seen: dict[str, datetime] = {}
    for op in ops:
        if isinstance(op, _Join):
            row = Attendance(
                id=op.row_id,
                org_id=op.org_id,
                session_id=op.session_id,
                user_id=op.user_id,
                device_id=op.device_pk,
                joined_at=op.at,
            )
            _ATTENDANCE.insert(conn, row)
            touched[row.id] = row
        elif isinstance(op, _Leave):
            found = touched.get(op.row_id) or _ATTENDANCE.get(conn, op.row_id)
            if found is not None and found.left_at is None:
                before = _ATTENDANCE.snapshot(found)
                found.left_at = op.at
                _ATTENDANCE.update(conn, found, before)
                touched[found.id] = found
        else:
            seen[op.device_pk] = op.at
    if seen:
        _DEVICES.set_column(conn, "last_seen_at", seen)
    # Presence travels to the org server with the same commit.
    enqueue_raw(conn, [(r.org_id, "attendance", r.id, row_payload(r)) for r in touched.values()])
