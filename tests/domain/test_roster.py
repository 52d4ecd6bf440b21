"""domain/roster.py: user rules, nickname uniqueness, paging, classes (real SQLite file)."""

from __future__ import annotations

import pytest

from vrlms_edge.domain import roster
from vrlms_edge.domain.passwords import verify_secret
from vrlms_edge.errors import AppError
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import User


async def _org(db: Database) -> str:
    return (await roster.get_or_create_org(db, "school", "School")).id


async def test_get_or_create_org_is_idempotent_and_box_org_finds_it(database: Database) -> None:
    first = await roster.get_or_create_org(database, "school", "School")
    again = await roster.get_or_create_org(database, "school", "Other name")
    assert again == first
    assert await roster.box_org(database) == first
    with pytest.raises(AppError) as missing:
        await roster.box_org(database, "nope")
    assert missing.value.code == "no_org"
    await roster.get_or_create_org(database, "second", "Second")
    with pytest.raises(AppError) as ambiguous:
        await roster.box_org(database)
    assert ambiguous.value.code == "ambiguous_org"


@pytest.mark.parametrize(
    ("role", "nickname", "pin", "password", "path"),
    [
        ("student", "bad nick", "1234", None, "$.nickname"),
        ("student", "x" * 65, "1234", None, "$.nickname"),
        ("student", "", "1234", None, "$.nickname"),
        ("student", "kid", "123", None, "$.pin"),
        ("student", "kid", "12345", None, "$.pin"),
        ("student", "kid", "12a4", None, "$.pin"),
        ("student", "kid", None, None, "$.pin"),
        ("student", "kid", "1234", "a-password-here", "$.password"),
        ("admin", "boss", None, None, "$.password"),
        ("admin", "boss", None, "short", "$.password"),
        ("teacher", "t", None, None, "$.pin"),
        ("janitor", "j", "1234", None, "$.role"),
    ],
)
async def test_create_user_rules(
    database: Database,
    role: str,
    nickname: str,
    pin: str | None,
    password: str | None,
    path: str,
) -> None:
    org_id = await _org(database)
    with pytest.raises(AppError) as refused:
        await roster.create_user(database, org_id, role, nickname, "Name", pin, password)
    assert (refused.value.status, refused.value.code) == (422, "validation_error")
    assert refused.value.detail == {"path": path}


async def test_create_user_hashes_secrets_and_refuses_taken_nickname(database: Database) -> None:
    org_id = await _org(database)
    teacher = await roster.create_user(
        database, org_id, "teacher", "t.one_2-x", "Teacher One", pin="4321", password="long-pass-1"
    )
    assert (teacher.role, teacher.has_pin, teacher.has_password) == ("teacher", True, True)
    async with database.read() as s:
        row = await s.get(User, teacher.id)
    assert row is not None and row.pin_hash and row.password_hash
    assert "4321" not in row.pin_hash
    assert verify_secret("4321", row.pin_hash) and verify_secret("long-pass-1", row.password_hash)
    with pytest.raises(AppError) as taken:
        await roster.create_user(database, org_id, "student", "t.one_2-x", "Other", pin="1111")
    assert (taken.value.status, taken.value.code) == (409, "nickname_taken")
    # The same nickname in another org is fine.
    other = await roster.get_or_create_org(database, "other", "Other")
    await roster.create_user(database, other.id, "student", "t.one_2-x", "Kid", pin="1111")


async def test_set_pin_password_disable(database: Database) -> None:
    org_id = await _org(database)
    kid = await roster.create_user(database, org_id, "student", "kid", "Kid", pin="1111")
    await roster.set_pin(database, org_id, kid.id, "2222")
    with pytest.raises(AppError):
        await roster.set_pin(database, org_id, kid.id, None)  # a student keeps a PIN
    with pytest.raises(AppError):
        await roster.set_password(database, org_id, kid.id, "a-long-password")
    assert (await roster.disable_user(database, org_id, kid.id)).disabled
    assert not (await roster.enable_user(database, org_id, kid.id)).disabled
    async with database.read() as s:
        row = await s.get(User, kid.id)
    assert row is not None and verify_secret("2222", row.pin_hash)
    with pytest.raises(AppError) as missing:
        await roster.set_pin(database, "another-org", kid.id, "3333")
    assert missing.value.status == 404


async def test_list_users_pages_with_cursor(database: Database) -> None:
    org_id = await _org(database)
    for n in range(5):
        await roster.create_user(database, org_id, "student", f"s{n}", f"S {n}", pin="1000")
    await roster.create_user(database, org_id, "teacher", "teach", "T", pin="1000")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await roster.list_users(database, org_id, role="student", limit=2, cursor=cursor)
        seen += [u.nickname for u in page.users]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ["s0", "s1", "s2", "s3", "s4"] and pages == 3
    with pytest.raises(AppError) as bad:
        await roster.list_users(database, org_id, cursor="garbage!")
    assert bad.value.code == "bad_cursor"
    with pytest.raises(AppError):
        await roster.list_users(database, org_id, limit=0)


async def test_classes_with_teacher_students_and_filters(database: Database) -> None:
    org_id = await _org(database)
    teacher = await roster.create_user(database, org_id, "teacher", "t", "T", pin="1000")
    kids = [
        await roster.create_user(database, org_id, "student", f"k{n}", f"K{n}", pin="1000")
        for n in range(3)
    ]
    a = await roster.create_class(database, org_id, "7A", teacher.id)
    b = await roster.create_class(database, org_id, "7B")
    with pytest.raises(AppError) as dup:
        await roster.create_class(database, org_id, "7A")
    assert dup.value.code == "class_name_taken"
    with pytest.raises(AppError):
        await roster.create_class(database, org_id, "7C", kids[0].id)  # a student cannot teach
    a = await roster.enroll(database, org_id, a.id, [kids[0].id, kids[1].id, kids[0].id])
    assert [s.nickname for s in a.students] == ["k0", "k1"]
    assert a.teacher is not None and a.teacher.nickname == "t"
    with pytest.raises(AppError):
        await roster.enroll(database, org_id, b.id, [teacher.id])  # only students enroll
    await roster.enroll(database, org_id, b.id, [kids[2].id, kids[0].id])
    own = await roster.list_classes(database, org_id, teacher_id=teacher.id)
    assert [c.name for c in own.classes] == ["7A"]
    mine = await roster.list_classes(database, org_id, student_id=kids[0].id)
    assert [c.name for c in mine.classes] == ["7A", "7B"]
    page = await roster.list_classes(database, org_id, limit=1)
    rest = await roster.list_classes(database, org_id, limit=1, cursor=page.next_cursor)
    assert [page.classes[0].name, rest.classes[0].name] == ["7A", "7B"]
    assert rest.next_cursor is None
    from vrlms_edge.live.clock import ServerClock

    a = await roster.unenroll(database, org_id, a.id, [kids[0].id], now=ServerClock().now())
    assert [s.nickname for s in a.students] == ["k1"]
    a = await roster.enroll(database, org_id, a.id, [kids[0].id])
    assert [s.nickname for s in a.students] == ["k0", "k1"]
    moved = await roster.update_class(database, org_id, b.id, name="8B", teacher_id=teacher.id)
    assert moved.name == "8B" and moved.teacher is not None
    assert (await roster.update_class(database, org_id, b.id, teacher_id=None)).teacher is None
