"""Login and logout: credentials, lockout, device admission and the bearer token they yield.

Rules (PROTOCOL.md "Login rules"):
- students log in with a 4-digit PIN, teachers with their PIN or password, admins with a
  password; an unknown or disabled nickname runs scrypt against a dummy hash, so it costs the
  same time as a wrong PIN and answers the same 401 `invalid_credentials`;
- per account (org + nickname, known or not): reaching `lockout_threshold` failures locks the
  account for `lockout_base_s`, doubling with every further failure up to `lockout_max_s`
  (429 `locked_out` with Retry-After); a correct secret clears the count. Attempts still
  being checked count too (`LoginGate`), so parallel guesses cannot slip past the lock;
- per client address: only failures are counted (after the check), so a classroom of headsets
  behind one NAT logging in at once is never throttled by its own successes;
- a device_id in the login must be an approved device that is not bound to another user.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final

import msgspec
from sqlalchemy import delete, or_, select

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
REGISTER: Final = "register"
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
    register_limit: int = 100

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
            register_limit=s.register_limit,
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


class LoginGate:
    """Logins being checked right now, per account, in this process.

    An attempt is let through only while the account's stored failures plus the attempts
    still in flight stay under the threshold, so parallel guesses cannot slip past the lock;
    and a success needs no write for the count at all."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    @contextlib.contextmanager
    def attempt(self, key: str) -> Iterator[int]:
        """Hold one attempt on `key`; yields how many others were in flight already."""
        before = self._in_flight.get(key, 0)
        self._in_flight[key] = before + 1
        try:
            yield before
        finally:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]


def _live_failures(row: LoginThrottle | None, policy: LoginPolicy, now: datetime) -> int:
    if row is None:
        return 0
    if row.updated_at < now - timedelta(seconds=policy.lockout_reset_s):
        return 0  # old failures are forgotten
    return row.failures


def _lock_left(row: LoginThrottle | None, now: datetime) -> float | None:
    if row is not None and row.locked_until is not None and row.locked_until > now:
        return (row.locked_until - now).total_seconds()
    return None


async def _count_failure(
    db: Database, policy: LoginPolicy, key: str, address: str, now: datetime
) -> float | None:
    """One failed login: +1 for the account (locking it at the threshold, for the back-off)
    and +1 for the client address, in one transaction. The lock length if this failure
    locked the account."""
    async with db.write() as s:
        row = await s.get(LoginThrottle, (ACCOUNT, key))
        if row is None:
            row = LoginThrottle(
                scope=ACCOUNT, key=key, failures=0, window_started_at=now, updated_at=now
            )
            s.add(row)
        row.failures = _live_failures(row, policy, now) + 1
        row.updated_at = now
        lock_s = None
        if row.failures >= policy.lockout_threshold:
            lock_s = policy.backoff_s(row.failures)
            row.locked_until = now + timedelta(seconds=lock_s)
        by_address = await s.get(LoginThrottle, (ADDRESS, address))
        if by_address is None:
            by_address = LoginThrottle(
                scope=ADDRESS, key=address, failures=0, window_started_at=now
            )
            s.add(by_address)
        window = timedelta(seconds=policy.address_window_s)
        if by_address.window_started_at + window <= now:
            by_address.failures = 0
            by_address.window_started_at = now
            by_address.locked_until = None
        by_address.failures += 1
        by_address.updated_at = now
        if by_address.failures >= policy.address_failure_limit:
            by_address.locked_until = by_address.window_started_at + window
        return None if lock_s is None else float(lock_s)


async def count_new_device(
    db: Database,
    policy: LoginPolicy,
    org_id: str,
    device_id: str,
    *,
    address: str,
    now: datetime,
) -> None:
    """Before a headset announces itself without a token: if `device_id` is new to the org,
    count it for `address`; 429 `rate_limited` past `register_limit` in `address_window_s`."""
    key = address[:MAX_KEY] or "unknown"
    async with db.write() as s:
        known = await s.execute(
            select(Device.id).where(Device.org_id == org_id, Device.device_id == device_id)
        )
        if known.first() is not None:
            return
        row = await s.get(LoginThrottle, (REGISTER, key))
        if row is None:
            row = LoginThrottle(scope=REGISTER, key=key, failures=0, window_started_at=now)
            s.add(row)
        window = timedelta(seconds=policy.address_window_s)
        if row.window_started_at + window <= now:
            row.failures = 0
            row.window_started_at = now
        if row.failures >= policy.register_limit:
            retry = max(1, math.ceil((row.window_started_at + window - now).total_seconds()))
            raise AppError(
                429,
                "rate_limited",
                "too many new headsets from this address: try again later",
                headers={"Retry-After": str(retry)},
            )
        row.failures += 1
        row.updated_at = now


async def _clear_account(db: Database, key: str) -> None:
    async with db.write() as s:
        await s.execute(
            delete(LoginThrottle).where(LoginThrottle.scope == ACCOUNT, LoginThrottle.key == key)
        )


async def prune_login_throttles(db: Database, policy: LoginPolicy, now: datetime) -> int:
    """Delete throttle rows that count for nothing any more: untouched for longer than both
    the lockout reset and the address window, and not locked. Without this, every mistyped
    nickname and every client address would keep its row for the life of the box."""
    idle_since = now - timedelta(seconds=max(policy.lockout_reset_s, policy.address_window_s))
    async with db.write() as s:
        result = await s.execute(
            delete(LoginThrottle).where(
                LoginThrottle.updated_at < idle_since,
                or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
            )
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


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
    gate: LoginGate,
    token_kind: str = "bearer",
    ttl_s: int | None = None,
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
    key = f"{org.id}:{request.nickname}"[:MAX_KEY]
    async with db.read() as s:
        by_address = await s.get(LoginThrottle, (ADDRESS, address))
        account = await s.get(LoginThrottle, (ACCOUNT, key))
        user = (
            await s.execute(
                select(User).where(User.org_id == org.id, User.nickname == request.nickname)
            )
        ).scalar_one_or_none()
    retry = _lock_left(by_address, now)
    if retry is not None:
        raise _locked(retry, ADDRESS)
    retry = _lock_left(account, now)
    if retry is not None:
        raise _locked(retry, ACCOUNT)
    failures = _live_failures(account, policy, now)
    with gate.attempt(key) as in_flight:
        # Guesses left before the lock (one at a time once a lock has run out): attempts
        # still being checked use them up, so parallel guesses cannot pass the lock.
        if in_flight >= max(1, policy.lockout_threshold - failures):
            raise _locked(1, ACCOUNT)
        secret = request.pin if request.pin is not None else request.password
        assert secret is not None
        stored = _stored_secret(user, request)
        ok = await verify_secret_async(secret, stored) and stored is not None
        if not ok or user is None:
            lock_s = await _count_failure(db, policy, key, address, now)
            if lock_s is not None:
                raise _locked(lock_s, ACCOUNT)
            raise _invalid_credentials()
    if account is not None:
        await _clear_account(db, key)
    device_pk = None
    if request.device_id is not None:
        device = await devices.admit(db, org.id, request.device_id, user.id, seen_at=now)
        device_pk = device.id
    token, row = await issue_token(
        db,
        user,
        now=now,
        ttl_s=ttl_s or policy.token_ttl_s,
        device_pk=device_pk,
        kind=token_kind,
    )
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
