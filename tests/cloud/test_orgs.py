"""Orgs, admins, one-time enrollment tokens (single use, expiring) and the box list."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import start_box, stop_box
from tests.conftest import test_settings as box_settings
from tests.orgserver import RunningCloud, seed_org, token_for
from vrlms_edge.cloud.orgs import issue_enrollment_token
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.models import Box, BoxIdentity
from vrlms_edge.sync.client import OrgServerRefused
from vrlms_edge.sync.enrollment import enroll

pytestmark = pytest.mark.postgres


async def test_token_enrolls_once_then_is_refused(cloud: RunningCloud, tmp_path: Path) -> None:
    world = await seed_org(cloud.db, "north")
    token = await token_for(cloud.db, world.org.id)
    box = await start_box(box_settings(tmp_path / "box", sync_worker=False))
    other = await start_box(box_settings(tmp_path / "other", sync_worker=False))
    try:
        org = await enroll(box.app[DB], box.app[CLOCK], tmp_path / "box", cloud.url, token)
        assert org.id == world.org.id and org.slug == "north"
        async with box.app[DB].read() as s:
            ident = (await s.execute(select(BoxIdentity))).scalar_one()
        assert ident.org_id == world.org.id and ident.org_server_url == cloud.url
        key_file = tmp_path / "box" / "box_ed25519.pem"
        assert key_file.stat().st_mode & 0o777 == 0o600

        # The same token again, from another box: refused, nothing registered.
        with pytest.raises(OrgServerRefused) as refused:
            await enroll(other.app[DB], other.app[CLOCK], tmp_path / "other", cloud.url, token)
        assert refused.value.status == 403 and refused.value.code == "enrollment_refused"
        async with cloud.db.read() as s:
            boxes = (await s.execute(select(Box))).scalars().all()
        assert [b.id for b in boxes] == [ident.id]
    finally:
        await stop_box(box)
        await stop_box(other)


async def test_expired_and_unknown_tokens_are_refused(cloud: RunningCloud, tmp_path: Path) -> None:
    world = await seed_org(cloud.db, "south")
    long_ago = ServerClock().now() - timedelta(days=2)
    expired, _ = await issue_enrollment_token(cloud.db, world.org.id, now=long_ago, ttl_s=3600)
    box = await start_box(box_settings(tmp_path / "box", sync_worker=False))
    try:
        for token in (expired, "vbe_made_up"):
            with pytest.raises(OrgServerRefused) as refused:
                await enroll(box.app[DB], box.app[CLOCK], tmp_path / "box", cloud.url, token)
            assert refused.value.code == "enrollment_refused"
        async with cloud.db.read() as s:
            assert (await s.execute(select(Box))).first() is None
        async with box.app[DB].read() as s:
            ident = (await s.execute(select(BoxIdentity))).scalar_one()
        assert ident.org_id is None
    finally:
        await stop_box(box)
