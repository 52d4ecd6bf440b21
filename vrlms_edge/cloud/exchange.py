"""What a box pulls and pushes: the org's change feed in pages, and the intake of box-authored
rows (upsert by id, newest version wins, answer what is held).

A box only ever sees and writes its own org: the feed is filtered by the box's org, and a
push that names another org, or an id or reference that lives in another org, is refused as
a whole (403 `foreign_org`) with nothing stored.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.errors import AppError, invalid
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Base, Box, ChangeLog, Org, SyncReceipt, utcnow
from vrlms_edge.sync.entities import (
    DOWN,
    RANK,
    UP,
    PayloadError,
    decode_values,
    model_for,
    org_of,
    references,
)
from vrlms_edge.sync.messages import (
    Held,
    ItemRef,
    Missing,
    PullAnswer,
    PulledItem,
    PushItem,
    PushRequest,
)
from vrlms_edge.sync.outbox import row_payload

# Page bounds: a page is one transaction on each side; 500 rows keep both short (tens of ms).
MAX_PULL_PAGE: Final = 500
MAX_PUSH_PAGE: Final = 500


def foreign_org() -> AppError:
    return AppError(403, "foreign_org", "a box may only read and write its own org")


async def pull_page(db: Database, box: Box, cursor: int, limit: int) -> PullAnswer:
    limit = max(1, min(limit, MAX_PULL_PAGE))
    async with db.read() as s:
        log = (
            await s.execute(
                select(ChangeLog.seq, ChangeLog.entity, ChangeLog.entity_id)
                .where(ChangeLog.org_id == box.org_id, ChangeLog.seq > cursor)
                .order_by(ChangeLog.seq)
                .limit(limit + 1)
            )
        ).all()
        more = len(log) > limit
        log = log[:limit]
        wanted: dict[str, list[str]] = defaultdict(list)
        for _seq, entity, entity_id in log:
            if entity in DOWN and entity_id not in wanted[entity]:
                wanted[entity].append(entity_id)
        items: list[PulledItem] = []
        for entity in sorted(wanted, key=RANK.__getitem__):
            model: Any = DOWN[entity]  # every synced model has id (and org_id but Org)
            ids = wanted[entity]
            stmt = select(model).where(model.id.in_(ids))
            org_col = model.id if model is Org else model.org_id
            rows = {r.id: r for r in (await s.execute(stmt.where(org_col == box.org_id))).scalars()}
            for entity_id in ids:
                row = rows.get(entity_id)
                data = row_payload(row) if row is not None else None
                items.append(PulledItem(entity=entity, id=entity_id, data=data))
    next_cursor = log[-1][0] if log else cursor
    return PullAnswer(org_id=box.org_id, cursor=next_cursor, more=more, items=items)


def _check_items(box: Box, items: list[PushItem]) -> list[tuple[PushItem, dict[str, Any]]]:
    if len(items) > MAX_PUSH_PAGE:
        raise invalid(f"at most {MAX_PUSH_PAGE} items per push")
    checked = []
    for i, item in enumerate(items):
        model = UP.get(item.entity)
        if model is None:
            raise invalid(f"items[{i}].entity: {item.entity!r} does not travel up")
        try:
            values = decode_values(model, item.data)
        except PayloadError as exc:
            raise invalid(f"items[{i}].data: {exc}") from exc
        if values["id"] != item.id:
            raise invalid(f"items[{i}]: data.id differs from id")
        if org_of(model, values) != box.org_id:
            raise foreign_org()
        checked.append((item, values))
    return checked


async def _owners(s: AsyncSession, table: str, ids: set[str]) -> dict[str, str]:
    """id -> org_id of the rows of `table` among `ids` (any org)."""
    model: Any = model_for(table)
    if model is None or not ids:
        return {}
    org_col = model.id if model is Org else model.org_id
    rows = await s.execute(select(model.id, org_col).where(model.id.in_(ids)))
    return {row_id: org_id for row_id, org_id in rows.all()}


async def push_items(db: Database, box: Box, req: PushRequest, *, now: datetime) -> list[Any]:
    """Store what the box sent; return [held, missing] as PushAnswer fields."""
    checked = _check_items(box, req.items)
    by_entity: dict[str, list[tuple[PushItem, dict[str, Any]]]] = defaultdict(list)
    for item, values in checked:
        by_entity[item.entity].append((item, values))
    held: list[Held] = []
    missing: list[Missing] = []
    async with db.write() as s:
        if not db.is_sqlite:
            # One box's pushes apply one at a time (a retry can overlap its original).
            await s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": box.id})
        for entity in sorted(by_entity, key=RANK.__getitem__):
            group = by_entity[entity]
            model = UP[entity]
            await _apply_group(s, box, entity, model, group, held, missing)
            await s.flush()
        row = await s.get(Box, box.id)
        if row is not None:
            row.last_sync_at = now
            if req.box is not None:
                row.version = req.box.version[:32]
                row.health = dict(req.box.health)
    return [held, missing]


async def _apply_group(
    s: AsyncSession,
    box: Box,
    entity: str,
    model: type[Base],
    group: list[tuple[PushItem, dict[str, Any]]],
    held: list[Held],
    missing: list[Missing],
) -> None:
    ids = {item.id for item, _ in group}
    owners = await _owners(s, entity, ids)
    if any(org != box.org_id for org in owners.values()):
        raise foreign_org()
    refs = references(model)
    wanted: dict[str, set[str]] = defaultdict(set)
    for _, values in group:
        for column, table in refs.items():
            if values.get(column) is not None:
                wanted[table].add(values[column])
    found = {table: await _owners(s, table, ref_ids) for table, ref_ids in wanted.items()}
    if any(org != box.org_id for owners_ in found.values() for org in owners_.values()):
        raise foreign_org()
    receipts = {
        r.entity_id: r
        for r in (
            await s.execute(
                select(SyncReceipt).where(
                    SyncReceipt.org_id == box.org_id,
                    SyncReceipt.entity == entity,
                    SyncReceipt.entity_id.in_(ids),
                )
            )
        ).scalars()
    }
    writes: list[dict[str, Any]] = []
    for item, values in group:
        need = next(
            (
                ItemRef(entity=table, id=values[column])
                for column, table in refs.items()
                if values.get(column) is not None and values[column] not in found[table]
            ),
            None,
        )
        held_version = receipts[item.id].version if item.id in receipts else None
        if need is not None:
            missing.append(Missing(entity=entity, id=item.id, needs=need))
        elif held_version is None or held_version < item.version:
            writes.append(values)
            held_version = item.version
        if held_version is not None:
            held.append(Held(entity=entity, id=item.id, version=held_version))
    if writes:
        await _upsert(s, model, writes)
        versions = {h.id: h.version for h in held if h.entity == entity}
        now = utcnow()
        await _upsert(
            s,
            SyncReceipt,
            [
                {
                    "org_id": box.org_id,
                    "entity": entity,
                    "entity_id": v["id"],
                    "box_id": box.id,
                    "version": versions[v["id"]],
                    "received_at": now,
                }
                for v in writes
            ],
            keys=("org_id", "entity", "entity_id"),
        )


async def _upsert(
    s: AsyncSession, model: type[Base], rows: list[dict[str, Any]], keys: tuple[str, ...] = ("id",)
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, grouped by column set (one statement each)."""
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_columns[tuple(sorted(row))].append(row)
    conn = await s.connection()
    table: Any = model.__table__
    for columns, group in by_columns.items():
        # One compiled statement, executed for many parameter sets (executemany): building
        # a 200-row VALUES clause instead costs far more in compilation than it saves.
        stmt = dialect.insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c: stmt.excluded[c] for c in columns if c not in keys},
        )
        await conn.execute(stmt, group)
