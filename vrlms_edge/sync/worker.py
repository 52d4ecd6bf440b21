"""The sync worker: pull roster/catalog changes, then push the outbox, in pages, resumably.

A run goes through stored stages that only move forward (SyncState `run`):

    idle -> pulling -> pushing -> done

- first of all (before `pulling`, so also while offline): event summaries of sessions with new
  events are recomputed and the changed ones queued for the push (domain/event_summaries.py;
  idempotent, so a resumed run simply does it again).
- `pulling`: ask for changes after the stored cursor; apply a page and store the page's
  cursor in the same transaction, so the cursor only moves past what is committed and a
  page applied twice changes nothing (rows are upserted by id to their current state;
  deletions arrive as tombstones).
- `pushing`: send outbox rows in pages; the org server answers what it holds (entity, id,
  version) and only rows whose version matches are deleted. A row the server could not store
  because it refers to a box-authored row it lacks (`missing`) gets that row queued too and
  is sent again in the next sweep.
- A run killed at any point resumes at its stored stage (a killed push starts pushing
  again; nothing is lost, a resent row is an idempotent upsert).

On failure the worker backs off (doubling, capped, jittered); the box never waits on it:
requests only ever touch the database, and pages are short write transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import msgspec
from sqlalchemy import bindparam, delete, func, select

from vrlms_edge import __version__
from vrlms_edge.config import Settings
from vrlms_edge.domain.event_summaries import summarise_events
from vrlms_edge.domain.managed import APPLYING_SYNC
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import OutboxEntry, SyncState
from vrlms_edge.sync.client import OrgServerClient, OrgServerRefused, OrgServerUnavailable
from vrlms_edge.sync.enrollment import (
    PROVISIONING_FILE,
    Enrolled,
    enroll,
    enrolled,
    read_provisioning,
)
from vrlms_edge.sync.entities import DOWN, RANK, UP, PayloadError, decode_values, org_of
from vrlms_edge.sync.identity import load_or_create_key
from vrlms_edge.sync.messages import BoxReport, PulledItem, PushItem, PushRequest
from vrlms_edge.sync.outbox import enqueue_row

log = logging.getLogger(__name__)

STAGES: Final = ("idle", "pulling", "pushing", "done")
RUN_KEY: Final = "run"
CURSOR_KEY: Final = "pull_cursor"
STATUS_KEY: Final = "status"
LEASE_KEY: Final = "lease"
# A lease older than this is taken over even if its holder lives (a run stuck that long is
# broken; runs are pages of short transactions).
LEASE_MAX_S: Final = 900.0
# Bounds one run so a server answering `more` forever cannot pin the worker.
MAX_PAGES_PER_RUN: Final = 10_000
# Sweeps over the outbox in one run: the second and third carry rows whose parents were
# queued by the first.
MAX_PUSH_SWEEPS: Final = 3


class SyncError(Exception):
    """A run could not finish (the message says why); the worker retries later."""


class NotEnrolled(SyncError):
    pass


class SyncBusy(SyncError):
    """Another run (the background worker, or `sync now`) is in progress."""


@dataclass
class SyncReport:
    pulled: int = 0
    pull_pages: int = 0
    pushed: int = 0
    confirmed: int = 0
    push_pages: int = 0
    missing: int = 0
    cursor: int = 0
    outbox_left: int = 0
    resumed_from: str | None = None
    # Event summaries created or changed (and queued) by this run, or why that failed.
    summarised: int = 0
    summary_error: str | None = None
    by_entity: dict[str, int] = field(default_factory=dict)


# --- stored stages and status ---------------------------------------------------------------


async def _get_state(db: Database, name: str) -> dict[str, Any]:
    async with db.read() as s:
        row = await s.get(SyncState, name)
        return dict(row.value) if row is not None else {}


async def _put_state(s: Any, name: str, value: dict[str, Any]) -> None:
    row = await s.get(SyncState, name)
    if row is None:
        s.add(SyncState(name=name, value=value))
    else:
        row.value = value


async def advance(db: Database, run: int, stage: str) -> None:
    """Store the run's new stage; a stage never goes back within a run."""
    async with db.write() as s:
        row = await s.get(SyncState, RUN_KEY)
        current = dict(row.value) if row is not None else {}
        if current.get("run") == run and STAGES.index(stage) < STAGES.index(
            current.get("stage", "idle")
        ):
            raise SyncError(f"stage may not go back from {current['stage']} to {stage}")
        await _put_state(s, RUN_KEY, {"run": run, "stage": stage})


async def _begin(db: Database) -> tuple[int, str | None]:
    """(run number, stage to resume at or None for a fresh run)."""
    current = await _get_state(db, RUN_KEY)
    run = int(current.get("run", 0))
    stage = current.get("stage", "idle")
    if stage in ("pulling", "pushing"):
        return run, stage
    return run + 1, None


async def _update_status(db: Database, **values: Any) -> None:
    async with db.write() as s:
        row = await s.get(SyncState, STATUS_KEY)
        merged = {**(row.value if row is not None else {}), **values}
        await _put_state(s, STATUS_KEY, merged)


class SyncStatus(msgspec.Struct, kw_only=True):
    enrolled: bool
    org_id: str | None
    org_server_url: str | None
    stage: str
    run: int
    cursor: int
    outbox: int
    last_attempt_at: str | None = None
    last_success_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    failures: int = 0
    next_attempt_at: str | None = None
    last_report: dict[str, Any] | None = None


async def sync_status(db: Database) -> SyncStatus:
    ident = await enrolled(db)
    run = await _get_state(db, RUN_KEY)
    status = await _get_state(db, STATUS_KEY)
    cursor = await _get_state(db, CURSOR_KEY)
    async with db.read() as s:
        outbox = (await s.execute(select(func.count()).select_from(OutboxEntry))).scalar_one()
    return SyncStatus(
        enrolled=ident is not None,
        org_id=ident.org_id if ident else None,
        org_server_url=ident.url if ident else None,
        stage=run.get("stage", "idle"),
        run=int(run.get("run", 0)),
        cursor=int(cursor.get("cursor", 0)),
        outbox=outbox,
        last_attempt_at=status.get("last_attempt_at"),
        last_success_at=status.get("last_success_at"),
        last_error=status.get("last_error"),
        last_error_at=status.get("last_error_at"),
        failures=int(status.get("failures", 0)),
        next_attempt_at=status.get("next_attempt_at"),
        last_report=status.get("last_report"),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _acquire(db: Database, clock: ServerClock, owner: str) -> None:
    """One run at a time per box: a lease row naming the holder's pid. A holder that died
    (SIGKILL, power cut) leaves a lease whose pid is gone; the next run takes it over."""
    async with db.write() as s:
        row = await s.get(SyncState, LEASE_KEY)
        held = dict(row.value) if row is not None else {}
        pid = held.get("pid")
        other = held.get("owner") not in (None, owner)
        now_ms = clock.now_ms()
        fresh = abs(now_ms - int(held.get("at_ms", 0))) < LEASE_MAX_S * 1000
        if other and isinstance(pid, int) and _alive(pid) and fresh:
            raise SyncBusy(f"another sync run is in progress (pid {pid})")
        await _put_state(s, LEASE_KEY, {"owner": owner, "pid": os.getpid(), "at_ms": now_ms})


async def _release(db: Database, owner: str) -> None:
    async with db.write() as s:
        row = await s.get(SyncState, LEASE_KEY)
        if row is not None and row.value.get("owner") == owner:
            row.value = {}


# --- pull -------------------------------------------------------------------------------------


async def _apply_page(
    db: Database, ident: Enrolled, items: list[PulledItem], cursor: int, now: datetime
) -> None:
    by_entity: dict[str, list[PulledItem]] = {}
    for item in items:
        if item.entity in DOWN:
            by_entity.setdefault(item.entity, []).append(item)
    async with db.write() as s:
        s.info[APPLYING_SYNC] = True
        for entity in sorted(by_entity, key=RANK.__getitem__):
            model: Any = DOWN[entity]
            group = by_entity[entity]
            ids = [i.id for i in group]
            rows = {
                r.id: r for r in (await s.execute(select(model).where(model.id.in_(ids)))).scalars()
            }
            for item in group:
                row = rows.get(item.id)
                if item.data is None:
                    if row is not None and row.deleted_at is None:
                        row.deleted_at = now
                    continue
                try:
                    values = decode_values(model, item.data)
                except PayloadError as exc:
                    raise SyncError(f"org server sent a bad {entity} row: {exc}") from exc
                if org_of(model, values) != ident.org_id or values["id"] != item.id:
                    raise SyncError(f"org server sent a {entity} row of another org")
                if row is None:
                    row = model(**values)
                    s.add(row)
                    rows[item.id] = row
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
            await s.flush()
        await _put_state(s, CURSOR_KEY, {"cursor": cursor})


async def pull_all(
    db: Database,
    org: OrgServerClient,
    ident: Enrolled,
    clock: ServerClock,
    page_size: int,
    report: SyncReport,
) -> None:
    cursor = int((await _get_state(db, CURSOR_KEY)).get("cursor", 0))
    for _ in range(MAX_PAGES_PER_RUN):
        page = await org.pull(cursor, page_size)
        if page.org_id != ident.org_id:
            raise SyncError("org server answered for another org")
        if page.cursor < cursor:
            raise SyncError("org server moved the cursor back")
        await _apply_page(db, ident, page.items, page.cursor, clock.now())
        report.pulled += len(page.items)
        report.pull_pages += 1
        for item in page.items:
            report.by_entity[item.entity] = report.by_entity.get(item.entity, 0) + 1
        cursor = page.cursor
        report.cursor = cursor
        if not page.more:
            return


# --- push -------------------------------------------------------------------------------------


async def _outbox_page(db: Database, org_id: str, after_seq: int, limit: int) -> list[OutboxEntry]:
    async with db.read() as s:
        rows = await s.execute(
            select(OutboxEntry)
            .where(OutboxEntry.org_id == org_id, OutboxEntry.seq > after_seq)
            .order_by(OutboxEntry.seq)
            .limit(limit)
        )
        return list(rows.scalars())


async def _health(db: Database) -> dict[str, Any]:
    async with db.read() as s:
        outbox = (await s.execute(select(func.count()).select_from(OutboxEntry))).scalar_one()
    return {"outbox": outbox}


async def push_all(
    db: Database, org: OrgServerClient, ident: Enrolled, page_size: int, report: SyncReport
) -> None:
    box_report = BoxReport(version=__version__, health=await _health(db))
    sent_any = False
    for _sweep in range(MAX_PUSH_SWEEPS):
        after_seq = 0
        queued_parents = 0
        for _ in range(MAX_PAGES_PER_RUN):
            rows = await _outbox_page(db, ident.org_id, after_seq, page_size)
            if not rows:
                break
            answer = await org.push(
                PushRequest(
                    items=[
                        PushItem(entity=r.entity, id=r.entity_id, version=r.version, data=r.payload)
                        for r in rows
                    ],
                    box=box_report,
                )
            )
            sent_any = True
            report.pushed += len(rows)
            report.push_pages += 1
            sent = {(r.entity, r.entity_id): r.version for r in rows}
            confirmed = [h for h in answer.held if sent.get((h.entity, h.id)) == h.version]
            async with db.write() as s:
                if confirmed:
                    # Only the confirmed version: a row changed meanwhile stays queued.
                    table: Any = OutboxEntry.__table__
                    await (await s.connection()).execute(
                        delete(table).where(
                            table.c.entity == bindparam("e"),
                            table.c.entity_id == bindparam("i"),
                            table.c.version == bindparam("v"),
                        ),
                        [{"e": h.entity, "i": h.id, "v": h.version} for h in confirmed],
                    )
                for m in answer.missing:
                    parent_model: Any = UP.get(m.needs.entity)
                    if parent_model is None:
                        continue  # an org-authored row the org server lacks: cannot help
                    queued = await s.execute(
                        select(OutboxEntry.seq).where(
                            OutboxEntry.entity == m.needs.entity,
                            OutboxEntry.entity_id == m.needs.id,
                        )
                    )
                    if queued.first() is not None:
                        continue
                    parent = await s.get(parent_model, m.needs.id)
                    if parent is not None:
                        await enqueue_row(s, parent)
                        queued_parents += 1
            report.confirmed += len(confirmed)
            report.missing += len(answer.missing)
            for h in confirmed:
                report.by_entity[h.entity] = report.by_entity.get(h.entity, 0) + 1
            after_seq = rows[-1].seq
        if queued_parents == 0 and report.missing == 0:
            break
        if queued_parents == 0 and _sweep > 0:
            break
    if not sent_any:
        # Nothing to send: still tell the org server we are alive, with version and health.
        await org.push(PushRequest(items=[], box=box_report))
    async with db.read() as s:
        report.outbox_left = (
            await s.execute(select(func.count()).select_from(OutboxEntry))
        ).scalar_one()


# --- one run ----------------------------------------------------------------------------------


async def sync_once(db: Database, settings: Settings, clock: ServerClock) -> SyncReport:
    """One full run (resuming a killed one first). Raises NotEnrolled, SyncError,
    OrgServerUnavailable, OrgServerRefused."""
    ident = await enrolled(db)
    if ident is None:
        raise NotEnrolled("this box is not enrolled with an org server")
    key = load_or_create_key(settings.data_dir)
    owner = uuid.uuid4().hex
    await _acquire(db, clock, owner)
    try:
        report = await _run(db, settings, clock, ident, key)
    finally:
        await _release(db, owner)
    await _update_status(
        db,
        last_success_at=clock.now().isoformat(),
        last_error=None,
        failures=0,
        next_attempt_at=None,
        last_report=asdict(report),
    )
    return report


async def _run(
    db: Database, settings: Settings, clock: ServerClock, ident: Enrolled, key: Any
) -> SyncReport:
    report = SyncReport()
    run, resume = await _begin(db)
    report.resumed_from = resume
    await _update_status(db, last_attempt_at=clock.now().isoformat())
    # Before anything goes on the wire: an offline box keeps its summaries current too.
    try:
        summaries = await summarise_events(db, clock.now(), clock.now_ms())
        report.summarised = summaries.changed
    except Exception as exc:  # results and sessions must still go up; the error is reported
        log.exception("event summaries failed; syncing the rest")
        report.summary_error = f"{type(exc).__name__}: {exc}"[:500]
    async with OrgServerClient(
        ident.url, ident.box_id, key, clock, ca_bundle=settings.org_server_ca_bundle
    ) as org:
        if resume != "pushing":
            await advance(db, run, "pulling")
            await pull_all(db, org, ident, clock, settings.sync_page_size, report)
        await advance(db, run, "pushing")
        await push_all(db, org, ident, settings.sync_page_size, report)
        await advance(db, run, "done")
    return report


def backoff_s(failures: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Doubling per failure, capped, then jittered down to as little as half."""
    raw = min(cap_s, base_s * 2 ** max(0, failures - 1))
    return float(raw * rng.uniform(0.5, 1.0))


# --- the background worker --------------------------------------------------------------------


class SyncWorker:
    """The box's background sync loop (a cleanup_ctx part). `wake()` asks for a run now."""

    def __init__(self, db: Database, settings: Settings, clock: ServerClock) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="vrlms-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def _provision(self) -> None:
        path = Path(self._settings.data_dir) / PROVISIONING_FILE
        if not path.exists():
            return
        try:
            url, token = read_provisioning(path)
            org = await enroll(
                self._db,
                self._clock,
                self._settings.data_dir,
                url,
                token,
                ca_bundle=self._settings.org_server_ca_bundle,
            )
        except (ValueError, OrgServerRefused) as exc:
            log.error("provisioning file refused: %s", exc)
            path.rename(path.with_name(path.name + ".failed"))
            return
        log.info("enrolled with %s as part of org %s", url, org.slug)
        path.rename(path.with_name(path.name + ".done"))

    async def _loop(self) -> None:
        failures = 0
        s = self._settings
        while True:
            delay = s.sync_interval_s
            try:
                if await enrolled(self._db) is None:
                    await self._provision()
                if await enrolled(self._db) is not None:
                    report = await sync_once(self._db, s, self._clock)
                    failures = 0
                    if report.pushed or report.pulled:
                        log.info(
                            "sync: pulled %d, pushed %d (%d confirmed)",
                            report.pulled,
                            report.pushed,
                            report.confirmed,
                        )
            except asyncio.CancelledError:
                raise
            except (SyncError, OrgServerUnavailable, OrgServerRefused, OSError) as exc:
                failures += 1
                delay = backoff_s(failures, s.sync_retry_base_s, s.sync_backoff_max_s, self._rng)
                log.warning("sync failed (%d in a row, next in %.1f s): %s", failures, delay, exc)
                await self._record_failure(exc, failures, delay)
            except Exception as exc:  # keep the worker alive; the error is shown in status
                failures += 1
                delay = backoff_s(failures, s.sync_retry_base_s, s.sync_backoff_max_s, self._rng)
                log.exception("sync crashed")
                await self._record_failure(exc, failures, delay)
            await self._sleep(delay)

    async def _record_failure(self, exc: BaseException, failures: int, delay: float) -> None:
        now = self._clock.now()
        try:
            await _update_status(
                self._db,
                last_error=f"{type(exc).__name__}: {exc}"[:500],
                last_error_at=now.isoformat(),
                failures=failures,
                next_attempt_at=datetime.fromtimestamp(
                    now.timestamp() + delay, now.tzinfo
                ).isoformat(),
            )
        except Exception:
            log.exception("could not store the sync status")
