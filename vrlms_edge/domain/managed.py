"""What the org server authors (users, classes, enrollments, the catalog, the org) is
read-only on a box that is enrolled with one: there, such writes are refused with 409
`managed_by_org_server`, and changes arrive by sync instead.

One check for every writer: a listener on the ORM flush, so a domain function, a CLI
import or a page handler cannot forget it. The sync worker applying pulled rows marks its
session with `APPLYING_SYNC`; the org server's own sessions carry the cloud role.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, UOWTransaction
from sqlalchemy.orm import Session as OrmSession

from vrlms_edge.errors import AppError
from vrlms_edge.store.models import BoxIdentity
from vrlms_edge.sync.entities import ORG_AUTHORED

# Session.info flags.
APPLYING_SYNC: Final = "vrlms.applying_sync"
ROLE_KEY: Final = "vrlms.role"
CLOUD_ROLE: Final = "cloud"


def managed_by_org_server() -> AppError:
    return AppError(
        409,
        "managed_by_org_server",
        "this box is enrolled with an org server: change users, classes and lessons there",
    )


def _touches_org_authored(session: OrmSession) -> bool:
    if any(isinstance(o, ORG_AUTHORED) for o in session.new):
        return True
    if any(isinstance(o, ORG_AUTHORED) for o in session.deleted):
        return True
    return any(
        isinstance(o, ORG_AUTHORED) and session.is_modified(o, include_collections=False)
        for o in session.dirty
    )


def _check(session: OrmSession, flush_context: UOWTransaction, instances: Any) -> None:
    if session.info.get(APPLYING_SYNC) or session.info.get(ROLE_KEY) == CLOUD_ROLE:
        return
    if not _touches_org_authored(session):
        return
    if _enrolled(session):
        raise managed_by_org_server()


def _check_bulk(state: ORMExecuteState) -> None:
    """Bulk INSERT/UPDATE/DELETE statements skip the flush: same rule for them."""
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    session = state.session
    if session.info.get(APPLYING_SYNC) or session.info.get(ROLE_KEY) == CLOUD_ROLE:
        return
    mapper = state.bind_mapper
    if mapper is None or mapper.class_ not in ORG_AUTHORED:
        return
    if _enrolled(session):
        raise managed_by_org_server()


def _enrolled(session: OrmSession) -> bool:
    found = session.connection().execute(
        select(BoxIdentity.id).where(BoxIdentity.org_id.is_not(None)).limit(1)
    )
    return found.first() is not None


def install_read_only_rule() -> None:
    """Register the checks once per process (idempotent)."""
    if not event.contains(OrmSession, "before_flush", _check):
        event.listen(OrmSession, "before_flush", _check)
    if not event.contains(OrmSession, "do_orm_execute", _check_bulk):
        event.listen(OrmSession, "do_orm_execute", _check_bulk)
