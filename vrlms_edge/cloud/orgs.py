"""Org server tenancy: orgs, their admins, one-time enrollment tokens and enrolled boxes."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import Final

import msgspec
from sqlalchemy import select

from vrlms_edge.domain.passwords import MIN_PASSWORD_LENGTH, hash_secret_async
from vrlms_edge.errors import AppError, conflict, invalid, not_found
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Box, EnrollmentToken, Org, Role, User
from vrlms_edge.sync.identity import unb64
from vrlms_edge.sync.messages import EnrollAnswer, EnrollRequest, OrgRef

SLUG_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# An enrollment token is typed or pasted by IT during provisioning: a day is enough.
ENROLLMENT_TOKEN_TTL_S: Final = 24 * 3600


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def org_ref(org: Org) -> OrgRef:
    return OrgRef(id=org.id, slug=org.slug, name=org.name)


async def create_org(db: Database, slug: str, name: str) -> Org:
    if not SLUG_RE.match(slug):
        raise invalid("slug: lower-case letters, digits and '-', at most 63")
    if not name.strip():
        raise invalid("name may not be empty")
    async with db.write() as s:
        if (await s.execute(select(Org).where(Org.slug == slug))).scalar_one_or_none():
            raise conflict("slug_taken", f"an org with slug {slug!r} exists")
        org = Org(slug=slug, name=name.strip())
        s.add(org)
    return org


async def org_by_slug(db: Database, slug: str) -> Org:
    async with db.read() as s:
        org = (
            await s.execute(select(Org).where(Org.slug == slug, Org.deleted_at.is_(None)))
        ).scalar_one_or_none()
    if org is None:
        raise not_found("org")
    return org


async def add_admin(
    db: Database, org_slug: str, nickname: str, password: str, display_name: str = ""
) -> User:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise invalid(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    if not nickname.strip():
        raise invalid("nickname may not be empty")
    org = await org_by_slug(db, org_slug)
    password_hash = await hash_secret_async(password)
    async with db.write() as s:
        taken = await s.execute(
            select(User).where(User.org_id == org.id, User.nickname == nickname)
        )
        if taken.scalar_one_or_none() is not None:
            raise conflict("nickname_taken", f"{nickname!r} exists in {org_slug}")
        user = User(
            org_id=org.id,
            role=Role.admin,
            nickname=nickname,
            display_name=display_name or nickname,
            password_hash=password_hash,
        )
        s.add(user)
    return user


async def issue_enrollment_token(
    db: Database, org_id: str, *, now: datetime, ttl_s: int = ENROLLMENT_TOKEN_TTL_S
) -> tuple[str, EnrollmentToken]:
    """A one-time token for one org; only its hash is stored."""
    token = "vbe_" + secrets.token_urlsafe(24)
    row = EnrollmentToken(
        org_id=org_id, token_hash=_hash(token), expires_at=now + timedelta(seconds=ttl_s)
    )
    async with db.write() as s:
        s.add(row)
    return token, row


def _refused(message: str) -> AppError:
    # One code for unknown, used and expired tokens: a guesser learns nothing.
    return AppError(403, "enrollment_refused", message)


async def enroll_box(db: Database, req: EnrollRequest, *, now: datetime) -> EnrollAnswer:
    """Spend a token: register the box's public key under the token's org."""
    try:
        public_key = unb64(req.public_key)
    except ValueError as exc:
        raise invalid("public_key: not base64url") from exc
    if len(public_key) != 32:
        raise invalid("public_key: expected 32 bytes (raw Ed25519)")
    if not 0 < len(req.box_id) <= 36 or not 0 < len(req.name) <= 63:
        raise invalid("box_id and name: 1..36 and 1..63 characters")
    async with db.write() as s:
        token = (
            await s.execute(
                select(EnrollmentToken)
                .where(EnrollmentToken.token_hash == _hash(req.token))
                .with_for_update()
            )
        ).scalar_one_or_none()
        if token is None or token.deleted_at is not None:
            raise _refused("unknown enrollment token")
        if token.used_at is not None:
            raise _refused("this enrollment token was already used")
        if token.expires_at <= now:
            raise _refused("this enrollment token has expired")
        org = await s.get(Org, token.org_id)
        if org is None or org.deleted_at is not None:
            raise _refused("the token's org no longer exists")
        box = await s.get(Box, req.box_id)
        if box is not None and box.org_id != org.id:
            raise conflict("box_enrolled_elsewhere", "this box is enrolled with another org")
        same_key = (
            await s.execute(select(Box).where(Box.public_key == public_key))
        ).scalar_one_or_none()
        if same_key is not None and same_key.id != req.box_id:
            raise conflict("key_in_use", "this public key belongs to another box")
        if box is None:
            box = Box(id=req.box_id, org_id=org.id, name=req.name, public_key=public_key)
            s.add(box)
        box.name = req.name
        box.public_key = public_key
        box.version = req.version[:32]
        box.deleted_at = None
        token.used_at = now
        token.box_id = req.box_id
        return EnrollAnswer(box_id=req.box_id, org=org_ref(org))


class BoxView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    version: str
    enrolled_at: str
    last_sync_at: str | None
    health: dict[str, object]


async def list_boxes(db: Database, org_id: str) -> list[BoxView]:
    async with db.read() as s:
        rows = (
            await s.execute(
                select(Box).where(Box.org_id == org_id, Box.deleted_at.is_(None)).order_by(Box.name)
            )
        ).scalars()
        return [
            BoxView(
                id=b.id,
                name=b.name,
                version=b.version,
                enrolled_at=b.created_at.isoformat(),
                last_sync_at=b.last_sync_at.isoformat() if b.last_sync_at else None,
                health=b.health or {},
            )
            for b in rows
        ]
