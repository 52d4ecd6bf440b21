"""The org server's change feed: every write to an org-authored row adds a ChangeLog entry
in the same transaction, whichever code made the write (one listener, no call to forget).

Boxes pull by ChangeLog.seq. On PostgreSQL a transaction with a lower seq could commit after
one with a higher seq and a box that already moved its cursor past it would never see it;
so writers of one org take a transaction-scoped advisory lock before numbering, which makes
seq order equal commit order within an org.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, insert, select, text
from sqlalchemy.orm import ORMExecuteState, UOWTransaction
from sqlalchemy.orm import Session as OrmSession

from vrlms_edge.domain.managed import CLOUD_ROLE, ROLE_KEY
from vrlms_edge.store.models import Base, ChangeLog, Org, utcnow
from vrlms_edge.sync.entities import ORG_AUTHORED


def _changed(session: OrmSession) -> list[Base]:
    rows: list[Base] = [o for o in session.new if isinstance(o, ORG_AUTHORED)]
    rows += [
        o
        for o in session.dirty
        if isinstance(o, ORG_AUTHORED) and session.is_modified(o, include_collections=False)
    ]
    rows += [o for o in session.deleted if isinstance(o, ORG_AUTHORED)]
    return rows


def _record(session: OrmSession, flush_context: UOWTransaction) -> None:
    # after_flush: ids are assigned and rows written, while new/dirty/deleted still show
    # what this flush changed; the entries go into the same transaction.
    if session.info.get(ROLE_KEY) != CLOUD_ROLE:
        return
    entries = []
    for row in _changed(session):
        row_id = getattr(row, "id", None)
        org_id = row_id if isinstance(row, Org) else getattr(row, "org_id", None)
        if row_id is None or org_id is None:
            continue
        entries.append({"org_id": org_id, "entity": row.__tablename__, "entity_id": row_id})
    _insert_entries(session, entries)


def _insert_entries(session: OrmSession, entries: list[dict[str, str]]) -> None:
    if not entries:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        for org_id in sorted({e["org_id"] for e in entries}):
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": org_id})
    now = utcnow()
    conn.execute(insert(ChangeLog), [{**e, "changed_at": now} for e in entries])


def _record_bulk(state: ORMExecuteState) -> Any:
    """Bulk UPDATE/DELETE statements skip the flush: record the rows they match."""
    if state.session.info.get(ROLE_KEY) != CLOUD_ROLE or not (state.is_update or state.is_delete):
        return None
    mapper = state.bind_mapper
    model: Any = mapper.class_ if mapper is not None else None
    if model not in ORG_AUTHORED:
        return None
    where = getattr(state.statement, "whereclause", None)
    org_col = model.id if model is Org else model.org_id
    query = select(model.id, org_col)
    if where is not None:
        query = query.where(where)
    matched = state.session.execute(query, state.parameters or {}).all()
    result = state.invoke_statement()
    _insert_entries(
        state.session,
        [
            {"org_id": org_id, "entity": model.__tablename__, "entity_id": i}
            for i, org_id in matched
        ],
    )
    return result


def install_change_feed() -> None:
    """Register the listeners once per process (idempotent)."""
    if not event.contains(OrmSession, "after_flush", _record):
        event.listen(OrmSession, "after_flush", _record)
    if not event.contains(OrmSession, "do_orm_execute", _record_bulk):
        event.listen(OrmSession, "do_orm_execute", _record_bulk)
