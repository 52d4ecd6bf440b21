"""domain/auth.py: credentials per role, lockout and back-off, address limit, device rules."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import RunningBox
from tests.world import PASSWORD, PIN, make_device, make_org
from vrlms_edge.domain import auth
from vrlms_edge.domain.auth import LoginPolicy, LoginRequest
from vrlms_edge.domain.tokens import resolve_token
from vrlms_edge.errors import AppError
from vrlms_edge.keys import CLOCK, DB, LOGIN_GATE
from vrlms_edge.store.models import Device, DeviceStatus, LoginThrottle, Org

POLICY = LoginPolicy(
    token_ttl_s=3600,
    lockout_threshold=5,
    lockout_base_s=30,
    lockout_max_s=900,
    lockout_reset_s=86400,
    address_failure_limit=1000,
    address_window_s=300,
)


def now0(box: RunningBox) -> datetime:
    return box.app[CLOCK].now()


async def attempt(
    box: RunningBox,
    nickname: str,
    *,
    at: datetime,
    policy: LoginPolicy = POLICY,
    addr: str = "10.0.0.1",
    **secret: str,
) -> auth.LoginAnswer:
    request = LoginRequest(nickname=nickname, **secret)  # type: ignore[arg-type]
    return await auth.login(
        box.app[DB], policy, request, client_addr=addr, now=at, gate=box.app[LOGIN_GATE]
    )


async def refused(box: RunningBox, nickname: str, *, at: datetime, **kw: str) -> AppError:
    with pytest.raises(AppError) as caught:
        await attempt(box, nickname, at=at, **kw)
    return caught.value


async def test_each_role_logs_in_with_its_secrets(box: RunningBox) -> None:
    world = await make_org(box.app[DB])
    t = now0(box)
    student = await attempt(box, "student0", at=t, pin=PIN)
    assert student.role == "student"
    assert student.user.nickname == "student0"
    assert student.org.slug == "school"
    assert student.expires_at == t + timedelta(seconds=POLICY.token_ttl_s)
    principal = await resolve_token(box.app[DB], student.token, now=t)
    assert principal is not None and principal.user_id == world.students[0].id
    assert (await attempt(box, "teacher", at=t, pin=PIN)).role == "teacher"
    assert (await attempt(box, "teacher", at=t, password=PASSWORD)).role == "teacher"
    assert (await attempt(box, "admin", at=t, password=PASSWORD)).role == "admin"
    # Admins have no PIN login; students have no password login.
    assert (await refused(box, "admin", at=t, pin=PIN)).code == "invalid_credentials"
    assert (await refused(box, "student0", at=t, password=PIN)).code == "invalid_credentials"
    both = await refused(box, "teacher", at=t, pin=PIN, password=PASSWORD)
    assert both.status == 422


async def test_unknown_nickname_answers_like_a_wrong_pin_and_costs_scrypt(
    box: RunningBox,
) -> None:
    await make_org(box.app[DB])
    t = now0(box)
    unknown = await refused(box, "nobody", at=t, pin="1111")
    wrong = await refused(box, "student0", at=t, pin="1111")
    assert (unknown.status, unknown.code, unknown.message) == (
        wrong.status,
        wrong.code,
        wrong.message,
    )

    async def cost(nickname: str) -> float:
        started = time.perf_counter()
        with pytest.raises(AppError):
            await attempt(box, nickname, at=t, pin="2222", addr="10.9.9.9")
        return time.perf_counter() - started

    # Fresh nicknames so no lock interferes; medians damp scheduler noise.
    unknown_s = statistics.median([await cost(f"ghost{i}") for i in range(3)])
    wrong_s = statistics.median([await cost(f"student{i}") for i in (1, 2, 1)])
    # The dummy scrypt runs: an unknown nickname is not answered measurably faster.
    assert unknown_s > 0.3 * wrong_s


async def test_lockout_backs_off_doubling_and_success_resets(box: RunningBox) -> None:
    await make_org(box.app[DB])
    t = now0(box)
    for _ in range(4):
        assert (await refused(box, "student0", at=t, pin="0000")).status == 401
    fifth = await refused(box, "student0", at=t, pin="0000")
    assert (fifth.status, fifth.code) == (429, "locked_out")
    assert fifth.headers["Retry-After"] == "30"
    # While locked even the right PIN is refused, and the secret is not even checked.
    locked = await refused(box, "student0", at=t + timedelta(seconds=10), pin=PIN)
    assert locked.code == "locked_out" and locked.headers["Retry-After"] == "20"
    # After the lock: the next failure locks again for twice as long.
    t2 = t + timedelta(seconds=31)
    sixth = await refused(box, "student0", at=t2, pin="0000")
    assert sixth.headers["Retry-After"] == "60"
    t3 = t2 + timedelta(seconds=61)
    seventh = await refused(box, "student0", at=t3, pin="0000")
    assert seventh.headers["Retry-After"] == "120"
    # A correct PIN after the lock resets the count: four more failures are plain 401s.
    t4 = t3 + timedelta(seconds=121)
    assert (await attempt(box, "student0", at=t4, pin=PIN)).role == "student"
    for _ in range(4):
        assert (await refused(box, "student0", at=t4, pin="0000")).status == 401
    # Other accounts were never affected.
    assert (await attempt(box, "student1", at=t, pin=PIN)).role == "student"


async def test_backoff_is_capped_and_unknown_nicknames_lock_too(box: RunningBox) -> None:
    await make_org(box.app[DB])
    assert [POLICY.backoff_s(n) for n in (5, 6, 7, 8, 9, 10, 11, 40)] == [
        30,
        60,
        120,
        240,
        480,
        900,
        900,
        900,
    ]
    t = now0(box)
    for _ in range(4):
        await refused(box, "ghost", at=t, pin="0000")
    # Unknown nicknames lock like real ones (no hint that the nickname does not exist).
    assert (await refused(box, "ghost", at=t, pin="0000")).code == "locked_out"


async def test_parallel_guesses_cannot_pass_the_lock(box: RunningBox) -> None:
    await make_org(box.app[DB])
    t = now0(box)
    results = await asyncio.gather(
        *(attempt(box, "student0", at=t, pin=f"{i:04d}") for i in range(5000, 5020)),
        return_exceptions=True,
    )
    codes = [r.code for r in results if isinstance(r, AppError)]
    assert len(codes) == 20
    # Counted before the check: at most `threshold` attempts were verified at all.
    assert codes.count("invalid_credentials") == POLICY.lockout_threshold - 1
    assert codes.count("locked_out") == 20 - (POLICY.lockout_threshold - 1)


async def test_address_limit_counts_failures_only(box: RunningBox) -> None:
    await make_org(box.app[DB], students=6)
    policy = dataclasses.replace(POLICY, address_failure_limit=3)
    t = now0(box)
    # Successes from one address never count.
    for _ in range(2):
        for i in range(6):
            await attempt(box, f"student{i}", at=t, policy=policy, pin=PIN)
    for i in range(3):
        await refused(box, f"student{i}", at=t, policy=policy, pin="9999")
    limited = await refused(box, "student5", at=t, policy=policy, pin=PIN)
    assert limited.code == "locked_out" and limited.detail["scope"] == "address"
    assert limited.headers["Retry-After"] == "300"
    # Another address is not affected; the window ends.
    ok = await attempt(box, "student5", at=t, policy=policy, pin=PIN, addr="10.0.0.2")
    assert ok.role == "student"
    later = t + timedelta(seconds=301)
    assert (await attempt(box, "student5", at=later, policy=policy, pin=PIN)).role == "student"


async def test_device_rules(box: RunningBox) -> None:
    db = box.app[DB]
    world = await make_org(db)
    t = now0(box)
    # Unknown device: recorded pending, login refused until approved.
    pending = await refused(box, "student0", at=t, pin=PIN, device_id="hs-new")
    assert (pending.status, pending.code) == (403, "device_pending")
    async with db.read() as s:
        row = (await s.execute(select(Device).where(Device.device_id == "hs-new"))).scalar_one()
    assert row.status == DeviceStatus.pending and row.org_id == world.org.id
    again = await refused(box, "student0", at=t, pin=PIN, device_id="hs-new")
    assert again.code == "device_pending"
    # Approved and unbound: admits anyone; the token is tied to the device.
    free = await make_device(db, world, "hs-free")
    answer = await attempt(box, "student1", at=t, pin=PIN, device_id="hs-free")
    principal = await resolve_token(db, answer.token, now=t)
    assert principal is not None and principal.device_pk == free.id
    # Bound: only its user.
    await make_device(db, world, "hs-bound", bound_to=world.students[0])
    assert (await attempt(box, "student0", at=t, pin=PIN, device_id="hs-bound")).role == "student"
    other = await refused(box, "student1", at=t, pin=PIN, device_id="hs-bound")
    assert (other.status, other.code) == (403, "device_bound_to_other")
    blocked_dev = await make_device(db, world, "hs-blocked", status=DeviceStatus.blocked)
    blocked = await refused(box, "student0", at=t, pin=PIN, device_id="hs-blocked")
    assert (blocked.status, blocked.code) == (403, "device_blocked")
    assert blocked_dev.id
    # Wrong PIN on a pending device is a credentials failure, not a device answer.
    wrong = await refused(box, "student2", at=t, pin="0000", device_id="hs-new")
    assert wrong.code == "invalid_credentials"


async def test_org_is_required_when_the_box_holds_several(box: RunningBox) -> None:
    db = box.app[DB]
    await make_org(db, "alpha")
    t = now0(box)
    assert (await attempt(box, "student0", at=t, pin=PIN)).org.slug == "alpha"
    beta = await make_org(db, "beta")
    missing = await refused(box, "student0", at=t, pin=PIN)
    assert (missing.status, missing.code) == (400, "org_required")
    answer = await auth.login(
        db,
        POLICY,
        LoginRequest(nickname="student0", pin=PIN, org="beta"),
        client_addr="x",
        now=t,
        gate=box.app[LOGIN_GATE],
    )
    assert answer.org.id == beta.org.id
    unknown = await refused(box, "student0", at=t, pin=PIN, org="gamma")
    assert unknown.code == "unknown_org"


async def test_logout_revokes_and_throttle_rows_are_cleared(box: RunningBox) -> None:
    db = box.app[DB]
    await make_org(db)
    t = now0(box)
    answer = await attempt(box, "teacher", at=t, pin=PIN)
    principal = await resolve_token(db, answer.token, now=t)
    assert principal is not None
    await auth.logout(db, principal, now=t)
    assert await resolve_token(db, answer.token, now=t) is None
    async with db.read() as s:
        rows = list((await s.execute(select(LoginThrottle))).scalars())
        orgs = list((await s.execute(select(Org))).scalars())
    assert rows == [] and len(orgs) == 1


async def test_throttle_rows_that_count_no_more_are_pruned(box: RunningBox) -> None:
    """Stale rows go; rows inside a window or still locked stay."""
    db = box.app[DB]
    await make_org(db)
    t = now0(box)
    for nickname in ("student0", "ghost1", "ghost2"):  # a real account and two typos
        await refused(box, nickname, at=t, pin="0000")
    for _ in range(5):  # locked until t + 30 s
        await refused(box, "student1", at=t, pin="0000")
    # A lock that outlives the reset age (a long back-off policy).
    long_lock = dataclasses.replace(
        POLICY, lockout_base_s=2 * POLICY.lockout_reset_s, lockout_max_s=2 * POLICY.lockout_reset_s
    )
    for _ in range(5):
        await refused(box, "student2", at=t, policy=long_lock, pin="0000")

    async def left() -> set[tuple[str, str]]:
        async with db.read() as s:
            rows = (await s.scalars(select(LoginThrottle))).all()
        return {(row.scope, row.key.rsplit(":", 1)[-1]) for row in rows}

    assert await auth.prune_login_throttles(db, POLICY, t) == 0  # nothing is stale yet
    later = t + timedelta(seconds=POLICY.lockout_reset_s + 1)
    # student0 fails again shortly before the pass: its row and the address's are fresh.
    await refused(box, "student0", at=later - timedelta(seconds=10), pin="0000")
    assert await auth.prune_login_throttles(db, POLICY, later) == 3
    assert await left() == {
        ("account", "student0"),
        ("account", "student2"),
        ("address", "10.0.0.1"),
    }


async def test_after_a_lock_runs_out_one_guess_at_a_time(box: RunningBox) -> None:
    await make_org(box.app[DB])
    t = now0(box)
    for _ in range(5):
        await refused(box, "student0", at=t, pin="0000")
    later = t + timedelta(seconds=31)
    results = await asyncio.gather(
        *(attempt(box, "student0", at=later, pin=f"{i:04d}") for i in range(7000, 7010)),
        return_exceptions=True,
    )
    assert all(isinstance(r, AppError) and r.code == "locked_out" for r in results)
    # Exactly one guess was checked: it failed and locked for twice as long.
    retry_afters = sorted(int(r.headers["Retry-After"]) for r in results)  # type: ignore[union-attr]
    assert retry_afters == [1] * 9 + [60]
