"""Bearer tokens: 256-bit random, stored as SHA-256, expiring, revocable."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update

from vrlms_edge.domain.principal import Principal
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import AuthToken, Role, User


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(
    db: Database,
    user: User,
    *,
    now: datetime,
    ttl_s: int,
    device_pk: str | None = None,
    kind: str = "bearer",
) -> tuple[str, AuthToken]:
    token = secrets.token_urlsafe(32)
    row = AuthToken(
        org_id=user.org_id,
        token_hash=token_hash(token),
        user_id=user.id,
        device_id=device_pk,
        kind=kind,
        csrf_token=secrets.token_urlsafe(24) if kind == "web" else None,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    async with db.write() as s:
        s.add(row)
    return token, row


async def resolve_token(db: Database, token: str, *, now: datetime) -> Principal | None:
    """The principal behind a live token, or None (unknown, expired, revoked, user disabled)."""
    if not token or len(token) > 256:
        return None
    async with db.read() as s:
        found = (
            await s.execute(
                select(AuthToken, User)
                .join(User, User.id == AuthToken.user_id)
                .where(AuthToken.token_hash == token_hash(token))
            )
        ).first()
    return None if found is None else principal_of(*found, now=now)


def principal_of(row: AuthToken, user: User, *, now: datetime) -> Principal | None:
    """The principal of a token row and its user, or None (expired, revoked, user disabled)."""
    if row.revoked_at is not None or row.expires_at <= now:
        return None
    if user.disabled or user.deleted_at is not None:
        return None
    return Principal(
        user_id=user.id,
        org_id=user.org_id,
        role=Role(user.role),
        nickname=user.nickname,
        display_name=user.display_name,
        token_id=row.id,
        device_pk=row.device_id,
        csrf_token=row.csrf_token,
    )


async def revoke_token(db: Database, token_id: str, *, now: datetime) -> None:
    async with db.write() as s:
        await s.execute(update(AuthToken).where(AuthToken.id == token_id).values(revoked_at=now))
