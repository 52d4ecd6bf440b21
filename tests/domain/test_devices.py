"""domain/devices.py: registration, approval, blocking, binding and admission."""

from __future__ import annotations

from datetime import timedelta

import pytest

from vrlms_edge.domain import devices, roster, tokens
from vrlms_edge.errors import AppError
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import User


async def test_device_lifecycle_and_admission(database: Database) -> None:
    clock = ServerClock()
    org = await roster.get_or_create_org(database, "school", "School")
    kid = await roster.create_user(database, org.id, "student", "kid", "Kid", pin="1234")
    other = await roster.create_user(database, org.id, "student", "other", "Other", pin="1234")

    seen = clock.now()
    new = await devices.register_device(database, org.id, "HS-1", "DPVR P1", "2.0", seen_at=seen)
    assert (new.status, new.model, new.app_version, new.last_seen_at) == (
        "pending",
        "DPVR P1",
        "2.0",
        seen,
    )
    again = await devices.register_device(database, org.id, "HS-1", app_version="2.1")
    assert (again.id, again.status, again.model, again.app_version) == (
        new.id,
        "pending",
        "DPVR P1",
        "2.1",
    )
    with pytest.raises(AppError) as pending:
        devices.device_admission(again, kid.id)
    assert (pending.value.status, pending.value.code) == (403, "device_pending")
    # admit() registers first, so a refused headset still shows up for the teacher.
    with pytest.raises(AppError):
        await devices.admit(database, org.id, "HS-NEW", kid.id)
    assert (await devices.get_device(database, org.id, "HS-NEW")).status == "pending"

    approved = await devices.approve_device(database, org.id, "HS-1")
    devices.device_admission(approved, kid.id)  # approved, unbound: anyone
    bound = await devices.bind_device(database, org.id, approved.id, kid.id)
    assert bound.bound_user is not None and bound.bound_user.nickname == "kid"
    devices.device_admission(bound, kid.id)
    with pytest.raises(AppError) as taken:
        devices.device_admission(bound, other.id)
    assert taken.value.code == "device_bound_to_other"
    devices.device_admission((await devices.unbind_device(database, org.id, "HS-1")), other.id)

    async with database.read() as s:
        user = await s.get(User, kid.id)
    assert user is not None
    token, _ = await tokens.issue_token(
        database, user, now=clock.now(), ttl_s=3600, device_pk=new.id
    )
    assert await tokens.resolve_token(database, token, now=clock.now()) is not None
    blocked = await devices.block_device(database, org.id, "HS-1", now=clock.now())
    with pytest.raises(AppError) as refused:
        devices.device_admission(blocked, kid.id)
    assert refused.value.code == "device_blocked"
    later = clock.now() + timedelta(seconds=1)
    assert await tokens.resolve_token(database, token, now=later) is None  # revoked


async def test_device_ids_are_checked_and_listed_in_pages(database: Database) -> None:
    org = await roster.get_or_create_org(database, "school", "School")
    for bad in ("", "has space", "x" * 129, "tab\there"):
        with pytest.raises(AppError) as refused:
            await devices.register_device(database, org.id, bad)
        assert refused.value.detail == {"path": "$.device_id"}
    for n in range(5):
        await devices.register_device(database, org.id, f"HS-{n}")
    await devices.approve_device(database, org.id, "HS-3")
    first = await devices.list_devices(database, org.id, limit=3)
    rest = await devices.list_devices(database, org.id, limit=3, cursor=first.next_cursor)
    assert [d.device_id for d in first.devices + rest.devices] == [f"HS-{n}" for n in range(5)]
    assert rest.next_cursor is None
    approved = await devices.list_devices(database, org.id, status="approved")
    assert [d.device_id for d in approved.devices] == ["HS-3"]
    other = await roster.get_or_create_org(database, "other", "Other")
    with pytest.raises(AppError) as hidden:
        await devices.approve_device(database, other.id, "HS-3")
    assert hidden.value.status == 404
