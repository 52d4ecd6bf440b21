"""Org-wide results: every result boxes of one org pushed, with the box it came from."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from sqlalchemy import Select, and_, select

from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Box, EventSummary, Lesson, Result, SyncReceipt, User

S = TypeVar("S", bound=Select[*tuple[Any, ...]])

# Bounds one answer; the page or API asks again with a narrower filter.
MAX_RESULTS = 1000


class ResultFilter(msgspec.Struct, kw_only=True):
    box_id: str | None = None
    user_id: str | None = None
    lesson_id: str | None = None
    session_id: str | None = None
    limit: int = 200


class OrgResult(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    nickname: str
    lesson_id: str
    lesson_title: str
    session_id: str | None
    status: str
    progress: float
    score: float | None
    time_spent_ms: int
    updated_at: str
    box_id: str | None
    box_name: str | None


def from_boxes(
    stmt: S, model: type[Result] | type[EventSummary], entity: str, f: ResultFilter
) -> S:
    """`stmt` over `model` rows, joined to the box that pushed each one (its sync receipt)
    and narrowed by the filter every org-wide list shares."""
    stmt = stmt.outerjoin(
        SyncReceipt,
        and_(
            SyncReceipt.org_id == model.org_id,
            SyncReceipt.entity == entity,
            SyncReceipt.entity_id == model.id,
        ),
    ).outerjoin(Box, Box.id == SyncReceipt.box_id)
    if f.box_id:
        stmt = stmt.where(SyncReceipt.box_id == f.box_id)
    if f.user_id:
        stmt = stmt.where(model.user_id == f.user_id)
    if f.lesson_id:
        stmt = stmt.where(model.lesson_id == f.lesson_id)
    if f.session_id:
        stmt = stmt.where(model.session_id == f.session_id)
    return stmt


async def org_results(db: Database, org_id: str, f: ResultFilter) -> list[OrgResult]:
    limit = max(1, min(f.limit, MAX_RESULTS))
    stmt = (
        select(Result, User.nickname, Lesson.title, Box.id, Box.name)
        .join(User, User.id == Result.user_id)
        .join(Lesson, Lesson.id == Result.lesson_id)
    )
    stmt = (
        from_boxes(stmt, Result, "results", f)
        .where(Result.org_id == org_id, Result.deleted_at.is_(None))
        .order_by(Result.updated_at.desc(), Result.id)
        .limit(limit)
    )
    async with db.read() as s:
        rows = (await s.execute(stmt)).all()
    return [
        OrgResult(
            id=r.id,
            user_id=r.user_id,
            nickname=nickname,
            lesson_id=r.lesson_id,
            lesson_title=title,
            session_id=r.session_id,
            status=r.status,
            progress=r.progress,
            score=r.score,
            time_spent_ms=r.time_spent_ms,
            updated_at=r.updated_at.isoformat(),
            box_id=box_id,
            box_name=box_name,
        )
        for r, nickname, title, box_id, box_name in rows
    ]
