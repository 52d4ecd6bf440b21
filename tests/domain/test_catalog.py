"""domain/catalog.py: courses, modules, lessons; ordering, validation, tombstones."""

from __future__ import annotations

import pytest

from vrlms_edge.domain import catalog, roster
from vrlms_edge.errors import AppError
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database


async def test_course_tree_in_order_and_tombstones(database: Database) -> None:
    now = ServerClock().now
    org = (await roster.get_or_create_org(database, "school", "School")).id
    solar = await catalog.create_course(database, org, "Solar System")
    await catalog.create_course(database, org, "Oceans")
    inner = await catalog.create_module(database, org, solar.id, "Inner planets")
    outer = await catalog.create_module(database, org, solar.id, "Outer planets")
    first = await catalog.create_module(database, org, solar.id, "Intro", position=0)
    await catalog.update_module(database, org, inner.id, position=1)
    await catalog.update_module(database, org, outer.id, position=2)
    mars = await catalog.create_lesson(
        database, org, inner.id, "Mars", "com.vrlms.solarsystem.mars", {"scene": "mars"}, 600
    )
    venus = await catalog.create_lesson(
        database, org, inner.id, "Venus", "com.vrlms.solarsystem.planets", position=0
    )
    await catalog.update_lesson(database, org, mars.id, position=1)
    saturn = await catalog.create_lesson(
        database, org, outer.id, "Saturn", "com.vrlms.solarsystem.planets"
    )
    await catalog.create_lesson(database, org, first.id, "Hello", "com.vrlms.intro")

    tree = await catalog.course_tree(database, org)
    assert [c.title for c in tree] == ["Solar System", "Oceans"]
    assert [m.title for m in tree[0].modules] == ["Intro", "Inner planets", "Outer planets"]
    assert [lesson.title for lesson in tree[0].modules[1].lessons] == ["Venus", "Mars"]
    assert tree[0].modules[1].lessons[1].launch == {"scene": "mars"}
    assert tree[0].modules[1].lessons[1].course_id == solar.id

    listed = await catalog.list_lessons(database, org)
    assert [x.title for x in listed.lessons] == ["Hello", "Venus", "Mars", "Saturn"]
    page = await catalog.list_lessons(database, org, limit=3)
    rest = await catalog.list_lessons(database, org, limit=3, cursor=page.next_cursor)
    assert [x.title for x in page.lessons + rest.lessons] == ["Hello", "Venus", "Mars", "Saturn"]
    assert rest.next_cursor is None
    in_module = await catalog.list_lessons(database, org, module_id=inner.id)
    assert [x.title for x in in_module.lessons] == ["Venus", "Mars"]

    await catalog.delete_lesson(database, org, venus.id, now=now())
    with pytest.raises(AppError):
        await catalog.get_lesson(database, org, venus.id)
    await catalog.delete_module(database, org, outer.id, now=now())
    with pytest.raises(AppError):
        await catalog.get_lesson(database, org, saturn.id)  # went with its module
    await catalog.delete_course(database, org, solar.id, now=now())
    assert [c.title for c in await catalog.course_tree(database, org)] == ["Oceans"]
    assert (await catalog.list_lessons(database, org)).lessons == []


async def test_new_entries_go_after_their_live_siblings(database: Database) -> None:
    """Only live entries of the same parent (org, course, module) hold a place."""
    now = ServerClock().now
    org = (await roster.get_or_create_org(database, "school", "School")).id
    other_org = (await roster.get_or_create_org(database, "other", "Other")).id
    await catalog.create_course(database, other_org, "Elsewhere")
    first = await catalog.create_course(database, org, "First")
    dropped = await catalog.create_course(database, org, "Dropped")
    await catalog.delete_course(database, org, dropped.id, now=now())
    assert (first.position, dropped.position) == (0, 1)
    assert (await catalog.create_course(database, org, "Second")).position == 1

    one = await catalog.create_module(database, org, first.id, "One", position=4)
    two = await catalog.create_module(database, org, first.id, "Two")
    assert (one.position, two.position) == (4, 5)
    a = await catalog.create_lesson(database, org, one.id, "A", "com.vrlms.a", position=7)
    b = await catalog.create_lesson(database, org, one.id, "B", "com.vrlms.b")
    c = await catalog.create_lesson(database, org, two.id, "C", "com.vrlms.c")
    assert (a.position, b.position, c.position) == (7, 8, 0)
    await catalog.delete_lesson(database, org, b.id, now=now())
    assert (await catalog.create_lesson(database, org, one.id, "D", "com.vrlms.d")).position == 8


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"title": ""}, "$.title"),
        ({"apk_package": "not a package"}, "$.apk_package"),
        ({"apk_package": "single"}, "$.apk_package"),
        ({"apk_package": "com.1bad.start"}, "$.apk_package"),
        ({"launch": {"blob": "x" * 9000}}, "$.launch"),
        ({"duration_s": -1}, "$.duration_s"),
        ({"duration_s": 600_000}, "$.duration_s"),
        ({"position": -5}, "$.position"),
    ],
)
async def test_lesson_fields_are_checked(
    database: Database, changes: dict[str, object], path: str
) -> None:
    org = (await roster.get_or_create_org(database, "school", "School")).id
    course = await catalog.create_course(database, org, "C")
    module = await catalog.create_module(database, org, course.id, "M")
    lesson = await catalog.create_lesson(database, org, module.id, "L", "com.example.app")
    with pytest.raises(AppError) as refused:
        await catalog.update_lesson(database, org, lesson.id, **changes)  # type: ignore[arg-type]
    assert refused.value.detail == {"path": path}
    assert (await catalog.get_lesson(database, org, lesson.id)).title == "L"


async def test_other_org_sees_nothing(database: Database) -> None:
    org = (await roster.get_or_create_org(database, "school", "School")).id
    other = (await roster.get_or_create_org(database, "other", "Other")).id
    course = await catalog.create_course(database, org, "C")
    module = await catalog.create_module(database, org, course.id, "M")
    lesson = await catalog.create_lesson(database, org, module.id, "L", "com.example.app")
    with pytest.raises(AppError) as hidden:
        await catalog.get_lesson(database, other, lesson.id)
    assert hidden.value.status == 404
    with pytest.raises(AppError):
        await catalog.create_module(database, other, course.id, "M2")
    assert await catalog.course_tree(database, other) == []
    found = await catalog.lessons_by_id(database, org, [lesson.id])
    assert [x.id for x in found] == [lesson.id]
    with pytest.raises(AppError):
        await catalog.lessons_by_id(database, other, [lesson.id])
