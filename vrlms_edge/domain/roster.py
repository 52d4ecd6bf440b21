"""The roster: the box's org, its users (admins, teachers, students) and classes.

Plain async functions over `Database`; refusals are `AppError`s (422 validation_error with
`detail.path`, 404 not_found, 409 conflicts). The returned views are msgspec Structs the REST
layer answers as they are. Secrets are hashed (scrypt, in a worker thread) before the write
transaction opens, so slow hashing never holds the write lock. CSV import/export of rosters
lives in `domain/roster_csv.py`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal

import msgspec
from msgspec import UNSET, UnsetType
from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from vrlms_edge.domain.paging import clamp_limit, decode_cursor, encode_cursor
from vrlms_edge.domain.passwords import MIN_PASSWORD_LENGTH, hash_secret_async, is_valid_pin
from vrlms_edge.errors import AppError, conflict, invalid, not_found
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import BoxIdentity, Class, Enrollment, Org, Role, User

NICKNAME_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SLUG_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# Column widths of the model (users.display_name, classes.name, orgs.name).
NAME_MAX: Final = 200
# scrypt hashes only what it is given; a cap keeps a megabyte "password" from costing memory.
PASSWORD_MAX: Final = 256

RoleName = Literal["admin", "teacher", "student"]


# --- views --------------------------------------------------------------------------------


class OrgView(msgspec.Struct, kw_only=True):
    id: str
    slug: str
    name: str


class UserRef(msgspec.Struct, kw_only=True):
    """A user as others see them (login answer `user`, class teacher and students)."""

    id: str
    nickname: str
    display_name: str


class UserView(msgspec.Struct, kw_only=True):
    id: str
    nickname: str
    display_name: str
    role: RoleName
    disabled: bool
    has_pin: bool
    has_password: bool


class UserPage(msgspec.Struct, kw_only=True):
    users: list[UserView]
    # Pass as `cursor` to get the next page; null on the last page.
    next_cursor: str | None = None


class ClassView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    teacher: UserRef | None
    students: list[UserRef]


class ClassPage(msgspec.Struct, kw_only=True):
    classes: list[ClassView]
    next_cursor: str | None = None


def org_view(row: Org) -> OrgView:
    return OrgView(id=row.id, slug=row.slug, name=row.name)


def user_ref(row: User) -> UserRef:
    return UserRef(id=row.id, nickname=row.nickname, display_name=row.display_name)


def user_view(row: User) -> UserView:
    return UserView(
        id=row.id,
        nickname=row.nickname,
        display_name=row.display_name,
        role=Role(row.role).value,
        disabled=row.disabled,
        has_pin=row.pin_hash is not None,
        has_password=row.password_hash is not None,
    )


# --- rules (also used row by row by the CSV import) ---------------------------------------


def _bad(field: str, message: str) -> AppError:
    return invalid(message, detail={"path": f"$.{field}"})


def check_nickname(nickname: str) -> None:
    if not NICKNAME_RE.match(nickname):
        raise _bad("nickname", "nickname must be 1-64 characters of A-Z a-z 0-9 . _ -")


def check_display_name(display_name: str, field: str = "display_name") -> None:
    if not display_name.strip() or len(display_name) > NAME_MAX:
        raise _bad(field, f"{field} must be 1-{NAME_MAX} characters")


def check_pin(pin: str) -> None:
    if not is_valid_pin(pin):
        raise _bad("pin", "PIN must be exactly 4 digits")


def check_password(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= PASSWORD_MAX:
        raise _bad("password", f"password must be {MIN_PASSWORD_LENGTH}-{PASSWORD_MAX} characters")


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise _bad("role", "role must be admin, teacher or student") from None


def check_credentials(role: Role, pin: str | None, password: str | None) -> None:
    """Admins need a password; teachers a PIN and/or a password; students a PIN (only)."""
    if pin is not None:
        check_pin(pin)
    if password is not None:
        check_password(password)
    if role == Role.admin and password is None:
        raise _bad("password", f"an admin needs a password of {MIN_PASSWORD_LENGTH}+ characters")
    if role == Role.teacher and pin is None and password is None:
        raise _bad("pin", "a teacher needs a PIN and/or a password")
    if role == Role.student:
        if pin is None:
            raise _bad("pin", "a student needs a 4-digit PIN")
        if password is not None:
            raise _bad("password", "students log in with a PIN, not a password")


# --- orgs ---------------------------------------------------------------------------------


async def get_or_create_org(db: Database, slug: str, name: str) -> OrgView:
    """The org with `slug`, created with `name` if there is none."""
    if not SLUG_RE.match(slug):
        raise _bad("slug", "org slug must be 1-64 characters of a-z 0-9 -")
    check_display_name(name, "name")
    async with db.write() as s:
        row = (await s.execute(select(Org).where(Org.slug == slug))).scalar_one_or_none()
        if row is None:
            row = Org(slug=slug, name=name.strip())
            s.add(row)
            await s.flush()
        return org_view(row)


async def box_org(db: Database, slug: str | None = None) -> OrgView:
    """The org this box serves: `slug` if given; else the org the box enrolled for; else the
    only org there is. 404 `no_org` when there is none, 409 `ambiguous_org` when several."""
    async with db.read() as s:
        if slug is not None:
            row = (await s.execute(select(Org).where(Org.slug == slug))).scalar_one_or_none()
            if row is None or row.deleted_at is not None:
                raise AppError(404, "no_org", f"no org with slug {slug!r}")
            return org_view(row)
        enrolled = (
            await s.execute(select(BoxIdentity.org_id).where(BoxIdentity.org_id.is_not(None)))
        ).scalar()
        if enrolled is not None:
            row = await s.get(Org, enrolled)
            if row is not None:
                return org_view(row)
        rows = (
            (await s.execute(select(Org).where(Org.deleted_at.is_(None)).limit(2))).scalars().all()
        )
    if not rows:
        raise AppError(404, "no_org", "this box has no org yet (load `demo` or import a roster)")
    if len(rows) > 1:
        raise conflict("ambiguous_org", "this box holds several orgs: name one by its slug")
    return org_view(rows[0])


# --- users --------------------------------------------------------------------------------


async def _user(s: AsyncSession, org_id: str, user_id: str) -> User:
    row = await s.get(User, user_id)
    if row is None or row.org_id != org_id or row.deleted_at is not None:
        raise not_found("user")
    return row


async def _user_by_nickname(s: AsyncSession, org_id: str, nickname: str) -> User | None:
    return (
        await s.execute(select(User).where(User.org_id == org_id, User.nickname == nickname))
    ).scalar_one_or_none()


def _taken(nickname: str) -> AppError:
    return conflict("nickname_taken", f"nickname {nickname!r} is already taken in this org")


async def create_user(
    db: Database,
    org_id: str,
    role: str,
    nickname: str,
    display_name: str,
    pin: str | None = None,
    password: str | None = None,
) -> UserView:
    """A new user. 422 on a rule broken (see check_*), 409 `nickname_taken`."""
    checked_role = check_role(role)
    check_nickname(nickname)
    check_display_name(display_name)
    check_credentials(checked_role, pin, password)
    async with db.read() as s:
        if await _user_by_nickname(s, org_id, nickname) is not None:
            raise _taken(nickname)
    pin_hash = await hash_secret_async(pin) if pin is not None else None
    password_hash = await hash_secret_async(password) if password is not None else None
    async with db.write() as s:
        if await s.get(Org, org_id) is None:
            raise not_found("org")
        if await _user_by_nickname(s, org_id, nickname) is not None:
            raise _taken(nickname)
        row = User(
            org_id=org_id,
            role=checked_role,
            nickname=nickname,
            display_name=display_name.strip(),
            pin_hash=pin_hash,
            password_hash=password_hash,
        )
        s.add(row)
        await s.flush()
        return user_view(row)


async def get_user(db: Database, org_id: str, user_id: str) -> UserView:
    async with db.read() as s:
        return user_view(await _user(s, org_id, user_id))


async def find_user(db: Database, org_id: str, nickname: str) -> UserView:
    """The user with `nickname`; 404 when there is none (or it was deleted)."""
    async with db.read() as s:
        row = await _user_by_nickname(s, org_id, nickname)
    if row is None or row.deleted_at is not None:
        raise not_found(f"user {nickname!r}")
    return user_view(row)


async def set_pin(db: Database, org_id: str, user_id: str, pin: str | None) -> UserView:
    """Set (or with None, clear) a user's PIN. A student keeps a PIN; an admin may have one."""
    if pin is not None:
        check_pin(pin)
    pin_hash = await hash_secret_async(pin) if pin is not None else None
    async with db.write() as s:
        row = await _user(s, org_id, user_id)
        role = Role(row.role)
        if pin is None and (role == Role.student or row.password_hash is None):
            raise _bad("pin", f"{row.nickname} would have no way to log in without a PIN")
        row.pin_hash = pin_hash
        return user_view(row)


async def set_password(db: Database, org_id: str, user_id: str, password: str) -> UserView:
    """Set a staff member's password (>= MIN_PASSWORD_LENGTH characters)."""
    check_password(password)
    async with db.read() as s:
        if Role((await _user(s, org_id, user_id)).role) == Role.student:
            raise _bad("password", "students log in with a PIN, not a password")
    password_hash = await hash_secret_async(password)
    async with db.write() as s:
        row = await _user(s, org_id, user_id)
        row.password_hash = password_hash
        return user_view(row)


async def set_disabled(db: Database, org_id: str, user_id: str, disabled: bool) -> UserView:
    """Disable (or enable) a login. A disabled user's tokens stop resolving at once."""
    async with db.write() as s:
        row = await _user(s, org_id, user_id)
        row.disabled = disabled
        return user_view(row)


async def disable_user(db: Database, org_id: str, user_id: str) -> UserView:
    return await set_disabled(db, org_id, user_id, True)


async def enable_user(db: Database, org_id: str, user_id: str) -> UserView:
    return await set_disabled(db, org_id, user_id, False)


async def list_users(
    db: Database,
    org_id: str,
    role: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> UserPage:
    """Users of the org by nickname, a page at a time (`next_cursor` continues)."""
    size = clamp_limit(limit)
    after = decode_cursor(cursor, 1)
    query = select(User).where(User.org_id == org_id, User.deleted_at.is_(None))
    if role is not None:
        query = query.where(User.role == check_role(role))
    if after is not None:
        query = query.where(User.nickname > str(after[0]))
    async with db.read() as s:
        rows = (await s.execute(query.order_by(User.nickname).limit(size + 1))).scalars().all()
    page = [user_view(r) for r in rows[:size]]
    more = len(rows) > size
    return UserPage(users=page, next_cursor=encode_cursor(page[-1].nickname) if more else None)


# --- classes ------------------------------------------------------------------------------


async def _class(s: AsyncSession, org_id: str, class_id: str) -> Class:
    row = await s.get(Class, class_id)
    if row is None or row.org_id != org_id or row.deleted_at is not None:
        raise not_found("class")
    return row


async def _check_teacher(s: AsyncSession, org_id: str, teacher_id: str) -> None:
    teacher = await _user(s, org_id, teacher_id)
    if Role(teacher.role) == Role.student:
        raise _bad("teacher_id", "a class is taught by a teacher or an admin, not a student")


async def _class_name_free(s: AsyncSession, org_id: str, name: str, but: str | None) -> None:
    query = select(Class.id).where(
        Class.org_id == org_id, Class.name == name, Class.deleted_at.is_(None)
    )
    if but is not None:
        query = query.where(Class.id != but)
    if (await s.execute(query.limit(1))).scalar() is not None:
        # Names identify classes in roster files, so they are unique within an org.
        raise conflict("class_name_taken", f"a class named {name!r} already exists")


async def class_views(s: AsyncSession, rows: Sequence[Class]) -> list[ClassView]:
    """Views of `rows` with their teacher and enrolled students (two queries for all)."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    teacher_ids = {r.teacher_id for r in rows if r.teacher_id}
    teachers = {
        u.id: user_ref(u)
        for u in (await s.execute(select(User).where(User.id.in_(teacher_ids)))).scalars()
    }
    students: dict[str, list[UserRef]] = {i: [] for i in ids}
    enrolled = await s.execute(
        select(Enrollment.class_id, User)
        .join(User, User.id == Enrollment.user_id)
        .where(
            Enrollment.class_id.in_(ids),
            Enrollment.deleted_at.is_(None),
            User.deleted_at.is_(None),
        )
        .order_by(User.nickname)
    )
    for class_id, user in enrolled.all():
        students[class_id].append(user_ref(user))
    return [
        ClassView(
            id=r.id,
            name=r.name,
            teacher=teachers.get(r.teacher_id) if r.teacher_id else None,
            students=students[r.id],
        )
        for r in rows
    ]


async def create_class(
    db: Database, org_id: str, name: str, teacher_id: str | None = None
) -> ClassView:
    """A new class (name unique in the org -> else 409 `class_name_taken`)."""
    check_display_name(name, "name")
    async with db.write() as s:
        if teacher_id is not None:
            await _check_teacher(s, org_id, teacher_id)
        await _class_name_free(s, org_id, name.strip(), None)
        row = Class(org_id=org_id, name=name.strip(), teacher_id=teacher_id)
        s.add(row)
        await s.flush()
        return (await class_views(s, [row]))[0]


async def update_class(
    db: Database,
    org_id: str,
    class_id: str,
    *,
    name: str | None = None,
    teacher_id: str | UnsetType | None = UNSET,
) -> ClassView:
    """Rename a class and/or change its teacher (teacher_id=None removes the teacher)."""
    async with db.write() as s:
        row = await _class(s, org_id, class_id)
        if name is not None:
            check_display_name(name, "name")
            await _class_name_free(s, org_id, name.strip(), row.id)
            row.name = name.strip()
        if not isinstance(teacher_id, UnsetType):
            if teacher_id is not None:
                await _check_teacher(s, org_id, teacher_id)
            row.teacher_id = teacher_id
        return (await class_views(s, [row]))[0]


async def delete_class(db: Database, org_id: str, class_id: str, *, now: datetime) -> None:
    """Tombstone a class (the deletion travels to the org server as data)."""
    async with db.write() as s:
        row = await _class(s, org_id, class_id)
        row.deleted_at = now


async def get_class(db: Database, org_id: str, class_id: str) -> ClassView:
    async with db.read() as s:
        return (await class_views(s, [await _class(s, org_id, class_id)]))[0]


async def enroll_rows(s: AsyncSession, org_id: str, class_id: str, user_ids: Sequence[str]) -> None:
    """Enroll students inside an open write transaction (idempotent)."""
    existing = {
        e.user_id: e
        for e in (
            await s.execute(select(Enrollment).where(Enrollment.class_id == class_id))
        ).scalars()
    }
    for user_id in dict.fromkeys(user_ids):
        user = await _user(s, org_id, user_id)
        if Role(user.role) != Role.student:
            raise _bad("user_ids", f"{user.nickname} is not a student")
        found = existing.get(user_id)
        if found is None:
            s.add(Enrollment(org_id=org_id, class_id=class_id, user_id=user_id))
        elif found.deleted_at is not None:
            found.deleted_at = None


async def enroll(db: Database, org_id: str, class_id: str, user_ids: Sequence[str]) -> ClassView:
    """Add students to a class (already enrolled ones are left as they are)."""
    async with db.write() as s:
        row = await _class(s, org_id, class_id)
        await enroll_rows(s, org_id, class_id, user_ids)
        await s.flush()
        return (await class_views(s, [row]))[0]


async def unenroll(
    db: Database, org_id: str, class_id: str, user_ids: Sequence[str], *, now: datetime
) -> ClassView:
    """Remove students from a class (enrollments are tombstoned for sync)."""
    async with db.write() as s:
        row = await _class(s, org_id, class_id)
        found = await s.execute(
            select(Enrollment).where(
                Enrollment.class_id == class_id,
                Enrollment.user_id.in_(list(user_ids)),
                Enrollment.deleted_at.is_(None),
            )
        )
        for enrollment in found.scalars():
            enrollment.deleted_at = now
        await s.flush()
        return (await class_views(s, [row]))[0]


async def list_classes(
    db: Database,
    org_id: str,
    *,
    teacher_id: str | None = None,
    student_id: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> ClassPage:
    """Classes by name (with teacher and students); filter to a teacher's own classes or to
    the classes a student is enrolled in. `next_cursor` continues."""
    size = clamp_limit(limit)
    after = decode_cursor(cursor, 2)
    query = select(Class).where(Class.org_id == org_id, Class.deleted_at.is_(None))
    if teacher_id is not None:
        query = query.where(Class.teacher_id == teacher_id)
    if student_id is not None:
        query = query.where(
            Class.id.in_(
                select(Enrollment.class_id).where(
                    Enrollment.user_id == student_id, Enrollment.deleted_at.is_(None)
                )
            )
        )
    if after is not None:
        query = query.where(tuple_(Class.name, Class.id) > tuple_(str(after[0]), str(after[1])))
    async with db.read() as s:
        rows = (
            (await s.execute(query.order_by(Class.name, Class.id).limit(size + 1))).scalars().all()
        )
        views = await class_views(s, rows[:size])
    more = len(rows) > size
    return ClassPage(
        classes=views,
        next_cursor=encode_cursor(views[-1].name, views[-1].id) if more else None,
    )


async def count_orgs(db: Database) -> int:
    async with db.read() as s:
        return int(
            (
                await s.execute(
                    select(func.count()).select_from(Org).where(Org.deleted_at.is_(None))
                )
            ).scalar_one()
        )
