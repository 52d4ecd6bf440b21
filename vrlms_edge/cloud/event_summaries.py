"""Org-wide event summaries: what each student did in each session, as counted by the box that
ran it (boxes push summaries, never raw events), with the box it came from."""

from __future__ import annotations

import msgspec
from sqlalchemy import and_, select

from vrlms_edge.cloud.results import ResultFilter, from_boxes
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Box, EventSummary, Lesson, Session, User

# Bounds one answer; the page or API asks again with a narrower filter.
MAX_SUMMARIES = 1000


class SummaryFilter(ResultFilter, kw_only=True):
    """The results filter, under its own name in the API description."""


class OrgEventSummary(msgspec.Struct, kw_only=True):
    id: str
    session_id: str
    session_title: str
    user_id: str
    nickname: str
    lesson_id: str | None
    lesson_title: str | None
    events: int
    gaze: int
    clicks: int
    actions: int
    progress_events: int
    result_events: int
    other_events: int
    # Event times (server-time estimates, ms since the epoch) of the first and last event.
    first_event_ms: int
    last_event_ms: int
    last_progress: float | None
    last_progress_ms: int | None
    last_score: float | None
    last_score_ms: int | None
    updated_at: str
    box_id: str | None
    box_name: str | None


async def org_event_summaries(db: Database, org_id: str, f: SummaryFilter) -> list[OrgEventSummary]:
    limit = max(1, min(f.limit, MAX_SUMMARIES))
    stmt = (
        select(EventSummary, User.nickname, Session.title, Lesson.title, Box.id, Box.name)
        .join(User, and_(User.id == EventSummary.user_id, User.org_id == org_id))
        .join(Session, and_(Session.id == EventSummary.session_id, Session.org_id == org_id))
        .outerjoin(Lesson, and_(Lesson.id == EventSummary.lesson_id, Lesson.org_id == org_id))
    )
    stmt = (
        from_boxes(stmt, EventSummary, "event_summaries", f)
        .where(EventSummary.org_id == org_id, EventSummary.deleted_at.is_(None))
        .order_by(EventSummary.last_event_ms.desc(), EventSummary.id)
        .limit(limit)
    )
    async with db.read() as s:
        rows = (await s.execute(stmt)).all()
    return [
        OrgEventSummary(
            id=r.id,
            session_id=r.session_id,
            session_title=session_title,
            user_id=r.user_id,
            nickname=nickname,
            lesson_id=r.lesson_id,
            lesson_title=lesson_title,
            events=r.events,
            gaze=r.gaze,
            clicks=r.clicks,
            actions=r.actions,
            progress_events=r.progress_events,
            result_events=r.result_events,
            other_events=r.other_events,
            first_event_ms=r.first_event_ms,
            last_event_ms=r.last_event_ms,
            last_progress=r.last_progress,
            last_progress_ms=r.last_progress_ms,
            last_score=r.last_score,
            last_score_ms=r.last_score_ms,
            updated_at=r.updated_at.isoformat(),
            box_id=box_id,
            box_name=box_name,
        )
        for r, nickname, session_title, lesson_title, box_id, box_name in rows
    ]
