"""Login and logout: credentials, lockout, device admission and the bearer token they yield.

Rules (PROTOCOL.md "Login rules"):
- students log in with a 4-digit PIN, teachers with their PIN or password, admins with a
  password; an unknown or disabled nickname runs scrypt against a dummy hash, so it costs the
  same time as a wrong PIN and answers the same 401 `invalid_credentials`;
- per account (org + nickname, known or not): each attempt is counted *before* the secret is
  checked, so parallel guesses cannot slip past the lock. Reaching `lockout_threshold` locks the
  account for `lockout_base_s`, doubling with every further failure up to `lockout_max_s`
  (429 `locked_out` with Retry-After); a correct secret clears the count;
- per client address: only failures are counted (after the check), so a classroom of headsets
  behind one NAT logging in at once is never throttled by its own successes;
- a device_id in the login must be an approved device that is not bound to another user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final

import msgspec
from sqlalchemy import delete, select

from vrlms_edge.config import Settings
from vrlms_edge.domain import devices
from vrlms_edge.domain.passwords import verify_secret_async
from vrlms_edge.domain.principal import Principal
from vrlms_edge.domain.roster import OrgView, UserRef
from vrlms_edge.domain.tokens import issue_token, revoke_token
from vrlms_edge.errors import AppError
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import (
    AuthToken,
    Device,
    LoginThrottle,
    Org,
    Role,
    User,
)

ACCOUNT: Final = "account"
ADDRESS: Final = "address"
# Throttle keys are stored in a 200-character column; nicknames are at most 64.
MAX_KEY: Final = 200

Nickname = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# Long enough for any password we accept, short enough that scrypt is not fed megabytes.
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class LoginRequest(msgspec.Struct, kw_only=True):
    """POST /api/login/. Give `pin` (students, teachers) or `password` (teachers, admins)."""

    nickname: Nickname
    pin: Secret | None = None
    password: Secret | None = None
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    # Org slug (or id); required when the box holds more than one org.
    org: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class LoginAnswer(msgspec.Struct, kw_only=True):
    token: str
    role: Role
    user: UserRef
    org: OrgView
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """The throttle settings, taken from Settings."""

    token_ttl_s: int
    lockout_threshold: int
    lockout_base_s: int
    lockout_max_s: int
    lockout_reset_s: int
    address_failure_limit: int
    address_window_s: int

    @classmethod
    def from_settings(cls, s: Settings) -> LoginPolicy:
        return cls(
            token_ttl_s=s.token_ttl_s,
            lockout_threshold=s.lockout_threshold,
            lockout_base_s=s.lockout_base_s,
            lockout_max_s=s.lockout_max_s,
            lockout_reset_s=s.lockout_reset_s,
            address_failure_limit=s.address_failure_limit,
            address_window_s=s.address_window_s,
        )

    def backoff_s(self, failures: int) -> int:
        """Lock length after `failures` failures (threshold reached): base, doubling, capped."""
        extra = failures - self.lockout_threshold
        if extra >= 16:  # 2**16 x base is past any sane cap; avoids huge integers
            return self.lockout_max_s
        return int(min(self.lockout_base_s * 2**extra, self.lockout_max_s))


def _locked(retry_after_s: float, scope: str) -> AppError:
    seconds = max(1, math.ceil(retry_after_s))
    return AppError(
        429,
        "locked_out",
        "too many failed logins: try again later",
        detail={"retry_after_s": seconds, "scope": scope},
        headers={"Retry-After": str(seconds)},
    )


def _invalid_credentials() -> AppError:
    return AppError(401, "invalid_credentials", "unknown nickname or wrong PIN/password")


async def resolve_org(db: Database, wanted: str | None) -> Org:
    """The org a login (or device announcement) is for: `wanted` slug/id, else the only one."""
    async with db.read() as s:
        orgs = list((await s.execute(select(Org).where(Org.deleted_at.is_(None)))).scalars())
    if wanted is not None:
        for org in orgs:
            if wanted in (org.slug, org.id):
                return org
        raise AppError(400, "unknown_org", "no org with this slug on this box")
    if len(orgs) == 1:
        return orgs[0]
    if not orgs:
        raise AppError(503, "no_org", "this box has no org yet: enroll it or load the demo")
    raise AppError(400, "org_required", "this box holds several orgs: give `org` (its slug)")


def _stored_secret(user: User | None, request: LoginRequest) -> str | None:
    """The hash the given secret must match for this user's role (None: run the dummy)."""
    if user is None or user.disabled or user.deleted_at is not None:
        return None
    role = Role(user.role)
    if request.password is not None:
        return user.password_hash if role in (Role.teacher, Role.admin) else None
    return user.pin_hash if role in (Role.teacher, Role.student) else None


async def _count_attempt(
    db: Database, policy: LoginPolicy, key: str, now: datetime
) -> float | None:
    """Count one attempt on the account before its secret is checked.

    Raises 429 when the account is locked. Returns the lock length in seconds when this
    attempt reached the lock (so a failure answers 429 at once), else None."""
    async with db.write() as s:
        row = await s.get(LoginThrottle, (ACCOUNT, key))
        if row is None:
            row = LoginThrottle(scope=ACCOUNT, key=key, failures=0, window_started_at=now)
            s.add(row)
        if row.locked_until is not None and row.locked_until > now:
            raise _locked((row.locked_until - now).total_seconds(), ACCOUNT)
        if row.failures and row.updated_at < now - timedelta(seconds=policy.lockout_reset_s):
            row.failures = 0  # old failures are forgotten
        row.failures += 1
        row.updated_at = now
        if row.failures >= policy.lockout_threshold:
            lock_s = policy.backoff_s(row.failures)
            row.locked_until = now + timedelta(seconds=lock_s)
            return float(lock_s)
        return None


async def _address_retry_after(db: Database, address: str, now: datetime) -> float | None:
    async with db.read() as s:
        row = await s.get(LoginThrottle, (ADDRESS, address))
    if row is not None and row.locked_until is not None and row.locked_until > now:
        return (row.locked_until - now).total_seconds()
    return None


async def _count_address_failure(
    db: Database, policy: LoginPolicy, address: str, now: datetime
) -> None:
    async with db.write() as s:
        row = await s.get(LoginThrottle, (ADDRESS, address))
        if row is None:
            row = LoginThrottle(scope=ADDRESS, key=address, failures=0, window_started_at=now)
            s.add(row)
        window = timedelta(seconds=policy.address_window_s)
        if row.window_started_at + window <= now:
            row.failures = 0
            row.window_started_at = now
            row.locked_until = None
        row.failures += 1
        row.updated_at = now
        if row.failures >= policy.address_failure_limit:
            row.locked_until = row.window_started_at + window


async def _clear_account(db: Database, key: str) -> None:
    async with db.write() as s:
        await s.execute(
            delete(LoginThrottle).where(LoginThrottle.scope == ACCOUNT, LoginThrottle.key == key)
        )


async def clear_lockout(db: Database, org_id: str, nickname: str) -> None:
    """Forget an account's failures (an admin reset its PIN or password)."""
    await _clear_account(db, f"{org_id}:{nickname}"[:MAX_KEY])


async def login(
    db: Database,
    policy: LoginPolicy,
    request: LoginRequest,
    *,
    client_addr: str,
    now: datetime,
) -> LoginAnswer:
    """Check the credentials and device; answer a fresh bearer token. Raises AppError."""
    if (request.pin is None) == (request.password is None):
        raise AppError(
            422,
            "validation_error",
            "give exactly one of `pin` or `password`",
            detail={"path": "$.pin"},
        )
    org = await resolve_org(db, request.org)
    address = client_addr[:MAX_KEY] or "unknown"
    retry = await _address_retry_after(db, address, now)
    if retry is not None:
        raise _locked(retry, ADDRESS)
    key = f"{org.id}:{request.nickname}"[:MAX_KEY]
    lock_s = await _count_attempt(db, policy, key, now)
    async with db.read() as s:
        user = (
            await s.execute(
                select(User).where(User.org_id == org.id, User.nickname == request.nickname)
            )
        ).scalar_one_or_none()
    secret = request.pin if request.pin is not None else request.password
    assert secret is not None
    stored = _stored_secret(user, request)
    ok = await verify_secret_async(secret, stored) and stored is not None
    if not ok or user is None:
        await _count_address_failure(db, policy, address, now)
        if lock_s is not None:
            raise _locked(lock_s, ACCOUNT)
        raise _invalid_credentials()
    await _clear_account(db, key)
    device_pk = None
    if request.device_id is not None:
        device = await devices.admit(db, org.id, request.device_id, user.id, seen_at=now)
        device_pk = device.id
    token, row = await issue_token(db, user, now=now, ttl_s=policy.token_ttl_s, device_pk=device_pk)
    return LoginAnswer(
        token=token,
        role=Role(user.role),
        user=UserRef(id=user.id, nickname=user.nickname, display_name=user.display_name),
        org=OrgView(id=org.id, slug=org.slug, name=org.name),
        expires_at=row.expires_at,
    )


async def logout(db: Database, principal: Principal, *, now: datetime) -> None:
    """Revoke the token the caller used."""
    await revoke_token(db, principal.token_id, now=now)


class Me(msgspec.Struct, kw_only=True):
    """GET /api/me/: who the token belongs to."""

    role: Role
    user: UserRef
    org: OrgView
    # The headset (its reported device_id) this token was issued to, if any.
    device_id: str | None
    expires_at: datetime


async def whoami(db: Database, principal: Principal) -> Me:
    async with db.read() as s:
        org = await s.get(Org, principal.org_id)
        token = await s.get(AuthToken, principal.token_id)
        device = await s.get(Device, principal.device_pk) if principal.device_pk else None
    if org is None or token is None:
        raise AppError(401, "unauthorized", "invalid or expired token")
    return Me(
        role=principal.role,
        user=UserRef(
            id=principal.user_id, nickname=principal.nickname, display_name=principal.display_name
        ),
        org=OrgView(id=org.id, slug=org.slug, name=org.name),
        device_id=device.device_id if device is not None else None,
        expires_at=token.expires_at,
    )
