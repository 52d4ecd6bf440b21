"""Tenant isolation of pull and push: a box of org A with a valid signature that asks for or
pushes org B's ids is refused (403 foreign_org) and nothing changes; pulls only ever carry
the box's own org."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import stop_box
from tests.orgserver import RunningCloud, enrolled_box, make_results, seed_org
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    Box,
    ChangeLog,
    Class,
    Lesson,
    Org,
    OutboxEntry,
    Result,
    ResultStatus,
    SyncReceipt,
    User,
)
from vrlms_edge.sync.client import OrgServerClient, OrgServerRefused
from vrlms_edge.sync.enrollment import enrolled
from vrlms_edge.sync.identity import load_or_create_key
from vrlms_edge.sync.messages import PushItem, PushRequest
from vrlms_edge.sync.outbox import row_payload

pytestmark = pytest.mark.postgres


async def _snapshot(db: Database) -> dict[str, Any]:
    async with db.read() as s:
        out: dict[str, Any] = {}
        for model in (Result, SyncReceipt, User, Class, Lesson):
            out[model.__tablename__] = (
                await s.execute(select(func.count()).select_from(model))
            ).scalar_one()
        out["results"] = sorted(
            (r.id, r.org_id, r.score) for r in (await s.execute(select(Result))).scalars()
        )
        out["boxes"] = sorted(
            (b.id, b.last_sync_at) for b in (await s.execute(select(Box))).scalars()
        )
        return out


async def test_box_cannot_read_or_write_another_org(cloud: RunningCloud, tmp_path: Path) -> None:
    a = await seed_org(cloud.db, "alpha")
    b = await seed_org(cloud.db, "beta")
    # Org B already holds a result (pushed by its own box, say).
    async with cloud.db.write() as s:
        b_result = Result(
            org_id=b.org.id,
            user_id=b.students[0].id,
            lesson_id=b.lessons[0].id,
            status=ResultStatus.completed,
            score=0.9,
        )
        s.add(b_result)
    box = await enrolled_box(cloud, a, tmp_path / "box")
    try:
        # The first pull carried org A and nothing of org B.
        async with box.app[DB].read() as s:
            orgs = {o.id for o in (await s.execute(select(Org))).scalars()}
            users = {u.org_id for u in (await s.execute(select(User))).scalars()}
        assert b.org.id not in orgs and users == {a.org.id}

        ident = await enrolled(box.app[DB])
        assert ident is not None
        key = load_or_create_key(tmp_path / "box")
        await make_results(box.app[DB], a, 1)
        async with box.app[DB].read() as s:
            own = (await s.execute(select(OutboxEntry))).scalar_one()
        async with OrgServerClient(cloud.url, ident.box_id, key, box.app[CLOCK]) as org:
            before = await _snapshot(cloud.db)
            base: dict[str, Any] = dict(own.payload)

            def item(**changes: Any) -> PushItem:
                data = {**base, **changes}
                return PushItem(entity="results", id=data["id"], version=99, data=data)

            attempts = [
                # A result claiming org B.
                [item(org_id=b.org.id)],
                # A result of org A that points at org B's student and lesson.
                [item(user_id=b.students[0].id)],
                [item(lesson_id=b.lessons[0].id)],
                # Overwrite org B's existing result by its id.
                [item(id=b_result.id)],
                # A good row next to a bad one: the whole page is refused.
                [item(), item(id="f" * 36, org_id=b.org.id)],
            ]
            for items in attempts:
                with pytest.raises(OrgServerRefused) as refused:
                    await org.push(PushRequest(items=items))
                assert (refused.value.status, refused.value.code) == (403, "foreign_org")
            with pytest.raises(OrgServerRefused) as refused:
                await org.pull(0, 50, org=b.org.id)
            assert (refused.value.status, refused.value.code) == (403, "foreign_org")
            assert await _snapshot(cloud.db) == before

            # An org B change never shows up in org A's feed.
            async with cloud.db.write() as s:
                (await s.get(User, b.students[1].id)).display_name = "renamed"  # type: ignore[union-attr]
            async with cloud.db.read() as s:
                cursor = (
                    await s.execute(
                        select(func.max(ChangeLog.seq)).where(ChangeLog.org_id == a.org.id)
                    )
                ).scalar_one()
            page = await org.pull(0, 500)
            assert page.org_id == a.org.id and page.cursor == cursor
            assert all(
                (i.data or {}).get("org_id", i.id) == a.org.id
                for i in page.items
                if i.entity != "orgs"
            )
            assert {i.id for i in page.items if i.entity == "orgs"} == {a.org.id}

            # Its own result goes through.
            answer = await org.push(PushRequest(items=[item()]))
            assert [(h.id, h.version) for h in answer.held] == [(own.entity_id, 99)]
    finally:
        await stop_box(box)


async def test_push_answers_what_the_org_server_holds(cloud: RunningCloud, tmp_path: Path) -> None:
    world = await seed_org(cloud.db, "gamma")
    box = await enrolled_box(cloud, world, tmp_path / "box")
    try:
        ident = await enrolled(box.app[DB])
        assert ident is not None
        key = load_or_create_key(tmp_path / "box")
        await make_results(box.app[DB], world, 1)
        async with box.app[DB].read() as s:
            row = (await s.execute(select(Result))).scalar_one()
            data = row_payload(row)
        async with OrgServerClient(cloud.url, ident.box_id, key, box.app[CLOCK]) as org:
            newer = PushItem(entity="results", id=row.id, version=5, data={**data, "score": 0.8})
            older = PushItem(entity="results", id=row.id, version=3, data={**data, "score": 0.1})
            assert [h.version for h in (await org.push(PushRequest(items=[newer]))).held] == [5]
            # A late, older version is not stored; the answer says what is held.
            assert [h.version for h in (await org.push(PushRequest(items=[older]))).held] == [5]
            async with cloud.db.read() as s:
                stored = await s.get(Result, row.id)
            assert stored is not None and stored.score == 0.8
            bad = PushItem(entity="users", id=row.id, version=6, data=data)
            with pytest.raises(OrgServerRefused) as refused:
                await org.push(PushRequest(items=[bad]))
            assert refused.value.status == 422
    finally:
        await stop_box(box)
