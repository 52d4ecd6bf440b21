"""Headsets: registration, approval, blocking, binding to a user, and admission.

A headset becomes known by the `device_id` string its app reports (at login or on the
WebSocket): `register_device` records it as `pending` the first time. An admin or teacher
approves or blocks it and may bind it to one user. `device_admission` is the single check
login and the WebSocket apply before letting a user in on a device.

Functions that act on one device take `device`: its `id` (the UUID clients see, as in
`welcome.device.id`) or its `device_id` string (what the CLI and labels on headsets use).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final, Literal

import msgspec
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain.paging import clamp_limit, decode_cursor, encode_cursor
from vrlms_edge.domain.roster import UserRef, user_ref
from vrlms_edge.errors import forbidden, invalid, not_found
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import AuthToken, Device, DeviceStatus, User
from vrlms_edge.sync.outbox import enqueue_row

# Printable ASCII without spaces: serial numbers, Android ids, MAC-like strings all fit.
DEVICE_ID_RE: Final = re.compile(r"^[\x21-\x7e]{1,128}$")
# Column widths of devices.model / devices.app_version / devices.name.
MODEL_MAX: Final = 128
APP_VERSION_MAX: Final = 64
NAME_MAX: Final = 200

StatusName = Literal["pending", "approved", "blocked"]


class DeviceView(msgspec.Struct, kw_only=True):
    id: str
    device_id: str
    name: str
    model: str
    app_version: str
    status: StatusName
    bound_user: UserRef | None
    last_seen_at: datetime | None


class DevicePage(msgspec.Struct, kw_only=True):
    devices: list[DeviceView]
    next_cursor: str | None = None


def check_device_id(device_id: str) -> None:
    if not DEVICE_ID_RE.match(device_id):
        raise invalid(
            "device_id must be 1-128 printable characters without spaces",
            detail={"path": "$.device_id"},
        )


def _check_status(status: str) -> DeviceStatus:
    try:
        return DeviceStatus(status)
    except ValueError:
        raise invalid(
            "status must be pending, approved or blocked", detail={"path": "$.status"}
        ) from None


async def _views(s: AsyncSession, rows: list[Device]) -> list[DeviceView]:
    bound_ids = {r.bound_user_id for r in rows if r.bound_user_id}
    users = {
        u.id: user_ref(u)
        for u in (await s.execute(select(User).where(User.id.in_(bound_ids)))).scalars()
    }
    return [
        DeviceView(
            id=r.id,
            device_id=r.device_id,
            name=r.name,
            model=r.model,
            app_version=r.app_version,
            status=DeviceStatus(r.status).value,
            bound_user=users.get(r.bound_user_id) if r.bound_user_id else None,
            last_seen_at=r.last_seen_at,
        )
        for r in rows
    ]


async def _view(s: AsyncSession, row: Device) -> DeviceView:
    return (await _views(s, [row]))[0]


async def _device(s: AsyncSession, org_id: str, device: str) -> Device:
    row = (
        await s.execute(
            select(Device).where(
                Device.org_id == org_id,
                or_(Device.id == device, Device.device_id == device),
                Device.deleted_at.is_(None),
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise not_found("device")
    return row


async def register_device(
    db: Database,
    org_id: str,
    device_id: str,
    model: str = "",
    app_version: str = "",
    *,
    seen_at: datetime | None = None,
) -> DeviceView:
    """The device with `device_id`, created `pending` if it is new; model, app version and
    last-seen time are updated from what the headset reports."""
    check_device_id(device_id)
    model, app_version = model[:MODEL_MAX], app_version[:APP_VERSION_MAX]
    async with db.write() as s:
        row = (
            await s.execute(
                select(Device).where(Device.org_id == org_id, Device.device_id == device_id)
            )
        ).scalar_one_or_none()
        if row is None:
            row = Device(org_id=org_id, device_id=device_id, status=DeviceStatus.pending)
            s.add(row)
        elif row.deleted_at is not None:
            # A forgotten headset that comes back starts over as unknown.
            row.deleted_at = None
            row.status = DeviceStatus.pending
            row.bound_user_id = None
        if model:
            row.model = model
        if app_version:
            row.app_version = app_version
        if seen_at is not None:
            row.last_seen_at = seen_at
        await s.flush()
        return await _view(s, row)


async def get_device(db: Database, org_id: str, device: str) -> DeviceView:
    async with db.read() as s:
        return await _view(s, await _device(s, org_id, device))


async def list_devices(
    db: Database,
    org_id: str,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> DevicePage:
    """Devices by device_id, optionally of one status; `next_cursor` continues."""
    size = clamp_limit(limit)
    after = decode_cursor(cursor, 1)
    query = select(Device).where(Device.org_id == org_id, Device.deleted_at.is_(None))
    if status is not None:
        query = query.where(Device.status == _check_status(status))
    if after is not None:
        query = query.where(Device.device_id > str(after[0]))
    async with db.read() as s:
        rows = list((await s.execute(query.order_by(Device.device_id).limit(size + 1))).scalars())
        views = await _views(s, rows[:size])
    more = len(rows) > size
    return DevicePage(
        devices=views, next_cursor=encode_cursor(views[-1].device_id) if more else None
    )


async def approve_device(db: Database, org_id: str, device: str) -> DeviceView:
    """Let the device join sessions (also lifts a block)."""
    async with db.write() as s:
        row = await _device(s, org_id, device)
        row.status = DeviceStatus.approved
        await enqueue_row(s, row)  # device approvals travel to the org server
        return await _view(s, row)


async def block_device(db: Database, org_id: str, device: str, *, now: datetime) -> DeviceView:
    """Shut the device out: status blocked and every token issued to it revoked."""
    async with db.write() as s:
        row = await _device(s, org_id, device)
        row.status = DeviceStatus.blocked
        await s.execute(
            update(AuthToken)
            .where(AuthToken.device_id == row.id, AuthToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await enqueue_row(s, row)
        return await _view(s, row)


async def bind_device(db: Database, org_id: str, device: str, user_id: str) -> DeviceView:
    """Bind the device to one user: from then on it admits only that user."""
    async with db.write() as s:
        row = await _device(s, org_id, device)
        user = await s.get(User, user_id)
        if user is None or user.org_id != org_id or user.deleted_at is not None:
            raise not_found("user")
        row.bound_user_id = user.id
        await enqueue_row(s, row)
        return await _view(s, row)


async def unbind_device(db: Database, org_id: str, device: str) -> DeviceView:
    async with db.write() as s:
        row = await _device(s, org_id, device)
        row.bound_user_id = None
        await enqueue_row(s, row)
        return await _view(s, row)


def device_admission(device: DeviceView | Device, user_id: str) -> None:
    """Whether `user_id` may use `device`: raises 403 `device_pending` (not yet approved),
    `device_blocked`, or `device_bound_to_other` (bound to another user)."""
    status = DeviceStatus(device.status)
    if status == DeviceStatus.blocked:
        raise forbidden("this headset is blocked", "device_blocked")
    if status != DeviceStatus.approved:
        raise forbidden("this headset waits for a teacher to approve it", "device_pending")
    if isinstance(device, Device):
        bound = device.bound_user_id
    else:
        bound = device.bound_user.id if device.bound_user is not None else None
    if bound is not None and bound != user_id:
        raise forbidden("this headset belongs to another student", "device_bound_to_other")


async def admit(
    db: Database,
    org_id: str,
    device_id: str,
    user_id: str,
    model: str = "",
    app_version: str = "",
    *,
    seen_at: datetime | None = None,
) -> DeviceView:
    """Register the device (committed even when refused, so a teacher sees it pending),
    then apply `device_admission`. What login does with a `device_id`."""
    view = await register_device(db, org_id, device_id, model, app_version, seen_at=seen_at)
    device_admission(view, user_id)
    return view
