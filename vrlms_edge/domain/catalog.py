"""The lesson catalog: courses made of ordered modules made of ordered lessons.

A lesson names the Android app that plays it (`apk_package`) and the launch parameters handed
to it (`launch`, a JSON object). Deletions are tombstones (`deleted_at`) so they can travel to
and from the org server; deleting a course or module tombstones what it contains. Updates take
`msgspec.UNSET` for "leave as it is", so a REST body Struct with UNSET defaults maps 1:1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

import msgspec
from msgspec import UNSET, UnsetType
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain.paging import clamp_limit, decode_cursor, encode_cursor
from vrlms_edge.errors import invalid, not_found
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Course, Lesson, Module

# Android application id: two or more dot-separated segments, each starting with a letter.
APK_PACKAGE_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")
TITLE_MAX: Final = 200
DESCRIPTION_MAX: Final = 10_000
# Launch parameters go to every headset in every `state` message: keep them small.
LAUNCH_MAX_BYTES: Final = 8 * 1024
# A day: longer than any lesson, short enough to catch a value given in milliseconds.
DURATION_MAX_S: Final = 24 * 3600

Entry = TypeVar("Entry", Course, Module, Lesson)


class LessonView(msgspec.Struct, kw_only=True):
    id: str
    title: str
    apk_package: str
    launch: dict[str, Any]
    module_id: str
    course_id: str
    duration_s: int | None
    position: int


class ModuleView(msgspec.Struct, kw_only=True):
    id: str
    course_id: str
    title: str
    position: int
    lessons: list[LessonView] = []


class CourseView(msgspec.Struct, kw_only=True):
    id: str
    title: str
    description: str
    position: int
    modules: list[ModuleView] = []


class LessonPage(msgspec.Struct, kw_only=True):
    lessons: list[LessonView]
    next_cursor: str | None = None


def _bad(field: str, message: str) -> Exception:
    return invalid(message, detail={"path": f"$.{field}"})


def _check_title(title: str) -> str:
    if not title.strip() or len(title) > TITLE_MAX:
        raise _bad("title", f"title must be 1-{TITLE_MAX} characters")
    return title.strip()


def _check_description(description: str) -> str:
    if len(description) > DESCRIPTION_MAX:
        raise _bad("description", f"description must be at most {DESCRIPTION_MAX} characters")
    return description


def _check_apk_package(apk_package: str) -> str:
    if len(apk_package) > TITLE_MAX or not APK_PACKAGE_RE.match(apk_package):
        raise _bad(
            "apk_package", "apk_package must be an Android package name like com.example.app"
        )
    return apk_package


def _check_launch(launch: dict[str, Any] | None) -> dict[str, Any]:
    if launch is None:
        return {}
    if not isinstance(launch, dict):
        raise _bad("launch", "launch must be a JSON object")
    try:
        size = len(msgspec.json.encode(launch))
    except (TypeError, msgspec.EncodeError):
        raise _bad("launch", "launch must be a JSON object") from None
    if size > LAUNCH_MAX_BYTES:
        raise _bad("launch", f"launch must encode to at most {LAUNCH_MAX_BYTES} bytes")
    return launch


def _check_duration(duration_s: int | None) -> int | None:
    if duration_s is not None and not 0 <= duration_s <= DURATION_MAX_S:
        raise _bad("duration_s", f"duration_s must be 0..{DURATION_MAX_S}")
    return duration_s


def _check_position(position: int | None) -> int | None:
    if position is not None and not 0 <= position <= 1_000_000:
        raise _bad("position", "position must be 0..1000000")
    return position


def _lesson_view(row: Lesson, course_id: str) -> LessonView:
    return LessonView(
        id=row.id,
        title=row.title,
        apk_package=row.apk_package,
        launch=row.launch or {},
        module_id=row.module_id,
        course_id=course_id,
        duration_s=row.duration_s,
        position=row.position,
    )


def _module_view(row: Module, lessons: list[LessonView] | None = None) -> ModuleView:
    return ModuleView(
        id=row.id,
        course_id=row.course_id,
        title=row.title,
        position=row.position,
        lessons=lessons or [],
    )


def _course_view(row: Course, modules: list[ModuleView] | None = None) -> CourseView:
    return CourseView(
        id=row.id,
        title=row.title,
        description=row.description,
        position=row.position,
        modules=modules or [],
    )


async def _live(s: AsyncSession, kind: type[Entry], org_id: str, entry_id: str) -> Entry:
    """The org's entry by id; 404 when it is unknown, another org's or tombstoned."""
    row = await s.get(kind, entry_id)
    if row is None or row.org_id != org_id or row.deleted_at is not None:
        raise not_found(kind.__name__.lower())
    return row


async def _course(s: AsyncSession, org_id: str, course_id: str) -> Course:
    return await _live(s, Course, org_id, course_id)


async def _module(s: AsyncSession, org_id: str, module_id: str) -> Module:
    row = await _live(s, Module, org_id, module_id)
    await _course(s, org_id, row.course_id)
    return row


async def _lesson(s: AsyncSession, org_id: str, lesson_id: str) -> tuple[Lesson, Module]:
    row = await _live(s, Lesson, org_id, lesson_id)
    return row, await _module(s, org_id, row.module_id)


async def _add_ordered(s: AsyncSession, row: Entry, parent: Any, position: int | None) -> None:
    """Add `row` as an ordered child of its parent (`parent` is the column naming it:
    Course.org_id, Module.course_id, Lesson.module_id): at `position`, or (None) after its
    last live sibling; tombstoned siblings hold no place."""
    kind = type(row)
    if position is None:
        siblings = (parent == getattr(row, parent.key), kind.deleted_at.is_(None))
        top = (await s.execute(select(func.max(kind.position)).where(*siblings))).scalar()
        position = 0 if top is None else int(top) + 1
    row.position = position
    s.add(row)
    await s.flush()


async def _tombstone(s: AsyncSession, kind: type[Entry], where: Any, now: datetime) -> None:
    """Tombstone the live entries of `kind` that `where` selects (what a deleted parent held)."""
    await s.execute(update(kind).where(where, kind.deleted_at.is_(None)).values(deleted_at=now))


# --- courses ------------------------------------------------------------------------------


async def create_course(
    db: Database,
    org_id: str,
    title: str,
    description: str = "",
    position: int | None = None,
) -> CourseView:
    """A new, empty course; `position` None puts it after the others."""
    title, description = _check_title(title), _check_description(description)
    _check_position(position)
    async with db.write() as s:
        row = Course(org_id=org_id, title=title, description=description)
        await _add_ordered(s, row, Course.org_id, position)
        return _course_view(row)


async def update_course(
    db: Database,
    org_id: str,
    course_id: str,
    *,
    title: str | UnsetType = UNSET,
    description: str | UnsetType = UNSET,
    position: int | UnsetType = UNSET,
) -> CourseView:
    async with db.write() as s:
        row = await _course(s, org_id, course_id)
        if not isinstance(title, UnsetType):
            row.title = _check_title(title)
        if not isinstance(description, UnsetType):
            row.description = _check_description(description)
        if not isinstance(position, UnsetType):
            row.position = _check_position(position) or 0
    return await get_course(db, org_id, course_id)


async def delete_course(db: Database, org_id: str, course_id: str, *, now: datetime) -> None:
    """Tombstone the course with its modules and their lessons."""
    async with db.write() as s:
        row = await _course(s, org_id, course_id)
        row.deleted_at = now
        module_ids = select(Module.id).where(Module.course_id == course_id)
        await _tombstone(s, Lesson, Lesson.module_id.in_(module_ids), now)
        await _tombstone(s, Module, Module.course_id == course_id, now)


# --- modules ------------------------------------------------------------------------------


async def create_module(
    db: Database, org_id: str, course_id: str, title: str, position: int | None = None
) -> ModuleView:
    """A new, empty module at the end of the course (or at `position`)."""
    title = _check_title(title)
    _check_position(position)
    async with db.write() as s:
        await _course(s, org_id, course_id)
        row = Module(org_id=org_id, course_id=course_id, title=title)
        await _add_ordered(s, row, Module.course_id, position)
        return _module_view(row)


async def update_module(
    db: Database,
    org_id: str,
    module_id: str,
    *,
    title: str | UnsetType = UNSET,
    position: int | UnsetType = UNSET,
    course_id: str | UnsetType = UNSET,
) -> ModuleView:
    """Rename, reorder or move a module to another course of the org."""
    async with db.write() as s:
        row = await _module(s, org_id, module_id)
        if not isinstance(title, UnsetType):
            row.title = _check_title(title)
        if not isinstance(position, UnsetType):
            row.position = _check_position(position) or 0
        if not isinstance(course_id, UnsetType):
            await _course(s, org_id, course_id)
            row.course_id = course_id
    async with db.read() as s:
        return (await _modules_with_lessons(s, org_id, [module_id]))[0]


async def delete_module(db: Database, org_id: str, module_id: str, *, now: datetime) -> None:
    """Tombstone the module and its lessons."""
    async with db.write() as s:
        row = await _module(s, org_id, module_id)
        row.deleted_at = now
        await _tombstone(s, Lesson, Lesson.module_id == module_id, now)


# --- lessons ------------------------------------------------------------------------------


async def create_lesson(
    db: Database,
    org_id: str,
    module_id: str,
    title: str,
    apk_package: str,
    launch: dict[str, Any] | None = None,
    duration_s: int | None = None,
    position: int | None = None,
) -> LessonView:
    """A new lesson at the end of the module (or at `position`)."""
    title, apk_package = _check_title(title), _check_apk_package(apk_package)
    launch, duration_s = _check_launch(launch), _check_duration(duration_s)
    _check_position(position)
    async with db.write() as s:
        module = await _module(s, org_id, module_id)
        row = Lesson(
            org_id=org_id,
            module_id=module_id,
            title=title,
            apk_package=apk_package,
            launch=launch,
            duration_s=duration_s,
        )
        await _add_ordered(s, row, Lesson.module_id, position)
        return _lesson_view(row, module.course_id)


async def update_lesson(
    db: Database,
    org_id: str,
    lesson_id: str,
    *,
    title: str | UnsetType = UNSET,
    apk_package: str | UnsetType = UNSET,
    launch: dict[str, Any] | UnsetType = UNSET,
    duration_s: int | UnsetType | None = UNSET,
    position: int | UnsetType = UNSET,
    module_id: str | UnsetType = UNSET,
) -> LessonView:
    async with db.write() as s:
        row, module = await _lesson(s, org_id, lesson_id)
        if not isinstance(title, UnsetType):
            row.title = _check_title(title)
        if not isinstance(apk_package, UnsetType):
            row.apk_package = _check_apk_package(apk_package)
        if not isinstance(launch, UnsetType):
            row.launch = _check_launch(launch)
        if not isinstance(duration_s, UnsetType):
            row.duration_s = _check_duration(duration_s)
        if not isinstance(position, UnsetType):
            row.position = _check_position(position) or 0
        if not isinstance(module_id, UnsetType):
            module = await _module(s, org_id, module_id)
            row.module_id = module_id
        await s.flush()
        return _lesson_view(row, module.course_id)


async def delete_lesson(db: Database, org_id: str, lesson_id: str, *, now: datetime) -> None:
    async with db.write() as s:
        row, _ = await _lesson(s, org_id, lesson_id)
        row.deleted_at = now


async def get_lesson(db: Database, org_id: str, lesson_id: str) -> LessonView:
    async with db.read() as s:
        row, module = await _lesson(s, org_id, lesson_id)
        return _lesson_view(row, module.course_id)


def _live_lessons(org_id: str) -> Any:
    """Lessons whose module and course are not deleted, in catalog order."""
    return (
        select(Lesson, Module.course_id)
        .join(Module, Module.id == Lesson.module_id)
        .join(Course, Course.id == Module.course_id)
        .where(
            Lesson.org_id == org_id,
            Lesson.deleted_at.is_(None),
            Module.deleted_at.is_(None),
            Course.deleted_at.is_(None),
        )
        .order_by(
            Course.position, Course.title, Course.id, Module.position, Module.id, Lesson.position
        )
        .order_by(Lesson.id)
    )


async def list_lessons(
    db: Database,
    org_id: str,
    *,
    course_id: str | None = None,
    module_id: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> LessonPage:
    """Lessons in catalog order (course, module, lesson position), optionally of one course or
    module. The cursor is an offset into that order: catalogs are small and change rarely."""
    size = clamp_limit(limit)
    after = decode_cursor(cursor, 1)
    offset = int(after[0]) if after is not None else 0
    query = _live_lessons(org_id)
    if course_id is not None:
        query = query.where(Module.course_id == course_id)
    if module_id is not None:
        query = query.where(Lesson.module_id == module_id)
    async with db.read() as s:
        rows = (await s.execute(query.offset(offset).limit(size + 1))).all()
    views = [_lesson_view(lesson, course) for lesson, course in rows[:size]]
    more = len(rows) > size
    return LessonPage(lessons=views, next_cursor=encode_cursor(offset + size) if more else None)


async def lessons_by_id(db: Database, org_id: str, lesson_ids: Sequence[str]) -> list[LessonView]:
    """The live lessons among `lesson_ids`, in the order asked; 404 if one is missing."""
    async with db.read() as s:
        query = _live_lessons(org_id).where(Lesson.id.in_(list(lesson_ids)))
        rows = (await s.execute(query)).all()
        found = {lesson.id: _lesson_view(lesson, course) for lesson, course in rows}
    missing = [i for i in lesson_ids if i not in found]
    if missing:
        raise not_found(f"lesson {missing[0]}")
    return [found[i] for i in lesson_ids]


async def _modules_with_lessons(
    s: AsyncSession, org_id: str, module_ids: Sequence[str] | None = None
) -> list[ModuleView]:
    query = select(Module).where(Module.org_id == org_id, Module.deleted_at.is_(None))
    if module_ids is not None:
        query = query.where(Module.id.in_(list(module_ids)))
    modules = list((await s.execute(query.order_by(Module.position, Module.id))).scalars())
    lessons = (
        await s.execute(
            select(Lesson)
            .where(
                Lesson.module_id.in_([m.id for m in modules]),
                Lesson.deleted_at.is_(None),
            )
            .order_by(Lesson.position, Lesson.id)
        )
    ).scalars()
    by_module: dict[str, list[LessonView]] = {m.id: [] for m in modules}
    course_of = {m.id: m.course_id for m in modules}
    for lesson in lessons:
        by_module[lesson.module_id].append(_lesson_view(lesson, course_of[lesson.module_id]))
    return [_module_view(m, by_module[m.id]) for m in modules]


async def course_tree(db: Database, org_id: str) -> list[CourseView]:
    """Every course with its modules and their lessons, all in order (GET /api/courses/)."""
    async with db.read() as s:
        courses = list(
            (
                await s.execute(
                    select(Course)
                    .where(Course.org_id == org_id, Course.deleted_at.is_(None))
                    .order_by(Course.position, Course.title, Course.id)
                )
            ).scalars()
        )
        modules = await _modules_with_lessons(s, org_id)
    by_course: dict[str, list[ModuleView]] = {c.id: [] for c in courses}
    for module in modules:
        if module.course_id in by_course:
            by_course[module.course_id].append(module)
    return [_course_view(c, by_course[c.id]) for c in courses]


async def get_course(db: Database, org_id: str, course_id: str) -> CourseView:
    async with db.read() as s:
        row = await _course(s, org_id, course_id)
        ids = (
            await s.execute(
                select(Module.id).where(Module.course_id == course_id, Module.deleted_at.is_(None))
            )
        ).scalars()
        modules = await _modules_with_lessons(s, org_id, list(ids))
    return _course_view(row, modules)
