"""domain/sessions.py: the state machine, revs under concurrency, scope, and auto start."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import select

from tests import conftest
from tests.conftest import RunningBox, start_box, stop_box
from tests.world import OrgWorld, bearer, make_org, token
from vrlms_edge.domain import sessions
from vrlms_edge.domain.principal import Principal
from vrlms_edge.domain.sessions import Action, Change, NewSession, NoBroadcast, SessionState
from vrlms_edge.errors import AppError
from vrlms_edge.keys import CLOCK, DB
from vrlms_edge.store.models import (
    Lesson,
    OutboxEntry,
    Role,
    Session,
    SessionRevision,
    User,
)
from vrlms_edge.sync.outbox import row_payload


def principal(user: User) -> Principal:
    return Principal(
        user_id=user.id,
        org_id=user.org_id,
        role=Role(user.role),
        nickname=user.nickname,
        display_name=user.display_name,
        token_id="t",
    )


class Recorder(NoBroadcast):
    def __init__(self) -> None:
        super().__init__(300)
        self.published: list[SessionState] = []

    def publish(self, org_id: str, class_id: str, state: SessionState) -> None:
        self.published.append(state)


async def new_session(box: RunningBox, world: OrgWorld, **kw: Any) -> str:
    view = await sessions.create_session(
        box.app[DB],
        principal(world.teacher),
        NewSession(class_id=world.klass.id, **kw),
        now=box.app[CLOCK].now(),
    )
    return view.id


def commander(
    box: RunningBox, teacher: User, sid: str, broadcast: sessions.StateBroadcast | None = None
) -> Callable[..., Awaitable[SessionState]]:
    """`do(action, **fields)`: one command of `teacher` on session `sid` (change_state)."""
    db, clock = box.app[DB], box.app[CLOCK]

    async def do(action: Action, **kw: Any) -> SessionState:
        change = Change(action=action, **kw)
        return await sessions.change_state(
            db, clock, broadcast or NoBroadcast(), principal(teacher), sid, change
        )

    return do


async def test_transitions_and_anchor(box: RunningBox) -> None:
    db, clock = box.app[DB], box.app[CLOCK]
    world = await make_org(db)
    rec = Recorder()
    sid = await new_session(box, world, lesson_ids=[lesson.id for lesson in world.lessons])
    do = commander(box, world.teacher, sid, rec)

    for bad in (Action.pause, Action.stop):
        with pytest.raises(AppError) as err:
            await do(bad)
        assert (err.value.status, err.value.code) == (409, "invalid_transition")
    before = clock.now_ms()
    playing = await do(Action.play)
    assert playing.status == "playing" and playing.rev == 1
    assert playing.lesson is not None and playing.lesson.id == world.lessons[0].id
    # The start is anchored lead_ms (the broadcast's lead) in the future.
    assert before + 300 <= playing.anchor_server_ms <= clock.now_ms() + 300
    with pytest.raises(AppError):
        await do(Action.play)
    await asyncio.sleep(0.35)
    paused = await do(Action.pause)
    # Paused where the lesson was: the time played since the (future) anchor, never negative.
    played = max(0, paused.anchor_server_ms - playing.anchor_server_ms)
    assert paused.status == "paused" and paused.anchor_position_ms == played
    resumed = await do(Action.play, lead_ms=0)
    assert resumed.anchor_position_ms == paused.anchor_position_ms
    other = await do(Action.launch, lesson_id=world.lessons[2].id)
    assert other.lesson is not None and other.lesson.id == world.lessons[2].id
    stopped = await do(Action.stop)
    assert stopped.status == "stopped"
    again = await do(Action.play, lesson_id=world.lessons[1].id, position_ms=5000)
    assert (again.status, again.anchor_position_ms, again.rev) == ("playing", 5000, 6)
    attention = await do(Action.attention, on=True, message="Look here")
    assert attention.attention.on and attention.attention.message == "Look here"
    assert attention.status == "playing"
    assert [s.rev for s in rec.published] == [1, 2, 3, 4, 5, 6, 7]


async def test_a_command_stores_the_row_its_revision_and_the_org_servers_copy(
    box: RunningBox,
) -> None:
    """The command path writes raw SQL (no model objects): what it stores must read back
    through the ORM as the state it answered, and the outbox must carry that very row."""
    db, clock = box.app[DB], box.app[CLOCK]
    world = await make_org(db)
    sid = await new_session(box, world, lesson_ids=[world.lessons[0].id])
    teacher = principal(world.teacher)
    do = commander(box, world.teacher, sid)

    async def stored() -> tuple[Session, list[SessionRevision], OutboxEntry]:
        async with db.read() as s:
            row = await s.get(Session, sid)
            history = (
                await s.execute(
                    select(SessionRevision)
                    .where(SessionRevision.session_id == sid)
                    .order_by(SessionRevision.rev)
                )
            ).scalars()
            copy = (
                await s.execute(select(OutboxEntry).where(OutboxEntry.entity_id == sid))
            ).scalar_one()
        assert row is not None
        return row, list(history), copy

    before = clock.now()
    played = await do(Action.play)
    await do(Action.attention, on=True, message="Eyes up")
    stopped = await do(Action.stop)
    row, history, copy = await stored()
    assert (row.status, row.rev, row.lesson_id) == ("stopped", 3, world.lessons[0].id)
    assert (row.anchor_server_ms, row.anchor_position_ms) == (
        stopped.anchor_server_ms,
        stopped.anchor_position_ms,
    )
    assert row.attention_on is True and row.attention_message == "Eyes up"
    assert row.started_at is not None and row.ended_at is not None
    assert before <= row.started_at <= row.ended_at <= clock.now()
    assert row.updated_at == row.ended_at  # one instant stamps a command
    assert [(h.rev, h.action, h.actor_id, h.status) for h in history] == [
        (1, "play", teacher.user_id, "playing"),
        (2, "attention", teacher.user_id, "playing"),
        (3, "stop", teacher.user_id, "stopped"),
    ]
    assert history[0].anchor_server_ms == played.anchor_server_ms
    assert history[1].attention_on is True and history[0].attention_on is False
    assert (copy.entity, copy.org_id) == ("sessions", world.org.id)
    assert copy.payload == row_payload(row)
    first_version, started_at = copy.version, row.started_at

    await do(Action.play)  # again: still started when it first was, no longer ended
    row, history, copy = await stored()
    assert row.started_at == started_at and row.ended_at is None
    assert copy.payload == row_payload(row) and copy.version > first_version
    assert len(history) == 4


async def test_a_state_carries_its_lesson_as_edited_last(box: RunningBox) -> None:
    """A command's state states the lesson as it is now (the command path keeps lesson refs
    by their columns: an edit is a new ref, never an old one served again)."""
    db = box.app[DB]
    world = await make_org(db)
    lesson = world.lessons[0]
    sid = await new_session(box, world, lesson_ids=[lesson.id])
    do = commander(box, world.teacher, sid, Recorder())

    await do(Action.play)
    first = (await do(Action.seek, position_ms=1000)).lesson
    assert first is not None and first.title == lesson.title
    async with db.write() as s:
        row = await s.get(Lesson, lesson.id)
        assert row is not None
        row.title, row.launch, row.duration_s = "Renamed", {"scene": "b"}, 42
    edited = (await do(Action.seek, position_ms=2000)).lesson
    assert edited is not None
    assert (edited.title, edited.launch, edited.duration_s) == ("Renamed", {"scene": "b"}, 42)
    assert first.title == lesson.title  # the earlier state's ref is untouched


async def test_no_lesson_and_scope(box: RunningBox) -> None:
    db, clock = box.app[DB], box.app[CLOCK]
    world = await make_org(db)
    other = await make_org(db, "other", prefix="o-")
    sid = await new_session(box, world)
    with pytest.raises(AppError) as err:
        await sessions.change_state(
            db, clock, NoBroadcast(), principal(world.teacher), sid, Change(action=Action.play)
        )
    assert (err.value.status, err.value.code) == (409, "no_lesson")
    # Another teacher of the org: 403; another org's admin: 404 (never revealed).
    with pytest.raises(AppError) as err:
        await sessions.change_state(
            db,
            clock,
            NoBroadcast(),
            principal(world.other_teacher),
            sid,
            Change(action=Action.play),
        )
    assert err.value.code == "not_your_class"
    with pytest.raises(AppError) as err:
        await sessions.get_session(db, principal(other.admin), sid)
    assert err.value.status == 404
    # A student sees sessions of their class, not others.
    assert (await sessions.get_session(db, principal(world.students[0]), sid)).id == sid
    # Another org's lesson cannot be added.
    with pytest.raises(AppError) as err:
        await sessions.add_lesson(db, principal(world.teacher), sid, other.lessons[0].id)
    assert err.value.status == 404


async def test_concurrent_commands_from_two_clients_get_consecutive_revs(
    box: RunningBox,
) -> None:
    """Teacher and admin press start/pause at the same instant, many times over REST."""
    db = box.app[DB]
    world = await make_org(db)
    sid = await new_session(box, world, lesson_ids=[world.lessons[0].id])
    clients = [
        bearer(await token(box.http, world.teacher)),
        bearer(await token(box.http, world.admin)),
    ]

    async def press(headers: dict[str, str], action: str) -> dict[str, Any] | None:
        body: dict[str, Any] = {"session_id": sid}
        if action == "start":
            body["lead_ms"] = 0
        async with box.http.post(f"/api/session/{action}/", json=body, headers=headers) as resp:
            answer = await resp.json()
            if resp.status == 409:
                assert answer["error"]["code"] == "invalid_transition"
                return None
            assert resp.status == 200, answer
            return dict(answer)

    rng = random.Random(7)
    answers: list[dict[str, Any]] = []
    for _ in range(15):
        presses = [press(clients[i], rng.choice(["start", "pause"])) for i in (0, 1, 0, 1)]
        answers += [a for a in await asyncio.gather(*presses) if a is not None]
    revs = sorted(a["state"]["rev"] for a in answers)
    assert revs == list(range(1, len(revs) + 1)), revs  # no gaps, no duplicates
    assert len(revs) >= 15
    async with db.read() as s:
        history = list(
            (
                await s.execute(
                    select(SessionRevision)
                    .where(SessionRevision.session_id == sid)
                    .order_by(SessionRevision.rev)
                )
            ).scalars()
        )
    assert [h.rev for h in history] == revs
    by_rev = {a["state"]["rev"]: a["state"] for a in answers}
    for row in history:
        assert row.status == by_rev[row.rev]["status"]
        assert row.anchor_server_ms == by_rev[row.rev]["anchor_server_ms"]
    # Status alternates: each accepted command was a real transition.
    statuses = [h.status for h in history]
    assert all(a != b for a, b in itertools.pairwise(statuses))


async def test_auto_start_after_restart_and_never_otherwise(tmp_path: Path) -> None:
    settings = conftest.test_settings(tmp_path / "data", schedule_poll_s=0.05)
    # The first box never gets to look (its auto start would only run after an hour).
    first = await start_box(msgspec.structs.replace(settings, schedule_poll_s=3600))
    try:
        db, clock = first.app[DB], first.app[CLOCK]
        world = await make_org(db)
        now = clock.now()
        lesson_ids = [world.lessons[0].id]
        due_soon = await new_session(
            first,
            world,
            lesson_ids=lesson_ids,
            auto_start=True,
            scheduled_start_at=now + timedelta(seconds=0.6),
            scheduled_end_at=now + timedelta(hours=1),
        )
        manual = await new_session(
            first,
            world,
            lesson_ids=lesson_ids,
            scheduled_start_at=now - timedelta(minutes=1),
            scheduled_end_at=now + timedelta(hours=1),
        )
        closed = await new_session(
            first,
            world,
            lesson_ids=lesson_ids,
            auto_start=True,
            scheduled_start_at=now - timedelta(hours=2),
            scheduled_end_at=now - timedelta(hours=1),
        )
    finally:
        await stop_box(first)  # the box is off when the session's time comes
    await asyncio.sleep(0.7)
    second = await start_box(settings)
    try:
        db = second.app[DB]
        teacher = principal(world.teacher)
        for _ in range(100):
            view = await sessions.get_session(db, teacher, due_soon)
            if view.state.status == "playing":
                break
            await asyncio.sleep(0.05)
        assert view.state.status == "playing" and view.state.rev == 1
        async with db.read() as s:
            rev = (
                await s.execute(
                    select(SessionRevision).where(SessionRevision.session_id == due_soon)
                )
            ).scalar_one()
        assert rev.actor_id is None and rev.action == "play"
        await asyncio.sleep(0.2)  # several more passes
        assert (await sessions.get_session(db, teacher, manual)).state.status == "idle"
        assert (await sessions.get_session(db, teacher, closed)).state.status == "idle"
        assert (await sessions.get_session(db, teacher, due_soon)).state.rev == 1
    finally:
        await stop_box(second)
