"""The admin panel: users, classes and enrollment, catalog, devices, box status and backup.

Each page is a plain form page: GET renders, POST applies one domain function and redirects
back with a message (post/redirect/get). Domain errors become the message, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import msgspec
from aiohttp import web

from vrlms_edge import __version__
from vrlms_edge.domain import catalog, devices, roster, roster_csv
from vrlms_edge.errors import AppError
from vrlms_edge.keys import BOX, CLOCK, DB, SETTINGS, STARTED
from vrlms_edge.store import backup as store_backup
from vrlms_edge.store.models import Role
from vrlms_edge.sync.worker import sync_status
from vrlms_edge.web.pages.forms import Action, dispatch, field, flash, optional
from vrlms_edge.web.pages.guard import Page, page

ADMIN = (Role.admin,)


async def _managed(request: web.Request) -> dict[str, bool]:
    """On an enrolled box the org server authors users, classes and the catalog: the pages say
    so (and the domain refuses edits with 409 managed_by_org_server)."""
    return {"managed": (await sync_status(request.app[DB])).enrolled}


# --- status ------------------------------------------------------------------------------------


@page(ADMIN)
async def status(request: web.Request, p: Page) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    shown = {
        "box_name": settings.box_name,
        "port": settings.port,
        "tls": settings.tls,
        "mdns": settings.mdns,
        "mdns_interfaces": ", ".join(settings.mdns_interfaces) or "all non-loopback",
        "sqlite_synchronous": settings.sqlite_synchronous,
        "heartbeat_s": settings.heartbeat_s,
        "token_ttl_s": settings.token_ttl_s,
        "event_retention_days": settings.event_retention_days,
    }
    db = app[DB]
    counts = {
        "users": (await roster.list_users(db, p.me.org_id, limit=500)).users.__len__(),
        "devices": len((await devices.list_devices(db, p.me.org_id, limit=500)).devices),
        "classes": len((await roster.list_classes(db, p.me.org_id, limit=500)).classes),
    }
    return aiohttp_jinja2.render_template(
        "admin/status.html",
        request,
        p.context(
            box=app[BOX],
            version=__version__,
            uptime_s=int(app[CLOCK].monotonic() - app[STARTED]),
            settings=shown,
            counts=counts,
            sync=await _sync_status(request),
            **flash(request),
        ),
    )


async def _sync_status(request: web.Request) -> dict[str, Any] | None:
    """Sync status of an enrolled box (stage, outbox, last success and error); None if the
    box works on its own."""
    current = await sync_status(request.app[DB])
    if not current.enrolled:
        return None
    shown = msgspec.structs.asdict(current)
    shown.pop("last_report", None)
    return {key: value for key, value in shown.items() if value not in (None, "")}


# --- users ---------------------------------------------------------------------------------------


@page(ADMIN)
async def users(request: web.Request, p: Page) -> web.StreamResponse:
    db = request.app[DB]
    cursor = request.query.get("cursor") or None
    try:
        listing = await roster.list_users(db, p.me.org_id, limit=100, cursor=cursor)
    except AppError:
        raise web.HTTPFound("/admin/users") from None
    return aiohttp_jinja2.render_template(
        "admin/users.html",
        request,
        p.context(
            users=listing.users,
            next_cursor=listing.next_cursor,
            **flash(request),
            **await _managed(request),
        ),
    )


@page(ADMIN)
async def users_post(request: web.Request, p: Page) -> web.StreamResponse:
    db = request.app[DB]
    org = p.me.org_id

    async def create(p: Page) -> str:
        user = await roster.create_user(
            db,
            org,
            field(p, "role"),
            field(p, "nickname"),
            field(p, "display_name") or field(p, "nickname"),
            pin=optional(p, "pin"),
            password=optional(p, "password"),
        )
        return f"created {user.nickname}"

    async def set_pin(p: Page) -> str:
        user = await roster.set_pin(db, org, field(p, "user_id"), field(p, "pin"))
        return f"PIN of {user.nickname} changed"

    async def set_password(p: Page) -> str:
        user = await roster.set_password(db, org, field(p, "user_id"), field(p, "password"))
        return f"password of {user.nickname} changed"

    async def disable(p: Page) -> str:
        if field(p, "user_id") == p.me.user_id:
            raise AppError(409, "cannot_disable_self", "you cannot disable your own account")
        user = await roster.disable_user(db, org, field(p, "user_id"))
        return f"{user.nickname} disabled"

    async def enable(p: Page) -> str:
        user = await roster.enable_user(db, org, field(p, "user_id"))
        return f"{user.nickname} enabled"

    actions: dict[str, Action] = {
        "create": create,
        "set_pin": set_pin,
        "set_password": set_password,
        "disable": disable,
        "enable": enable,
    }
    return await dispatch("/admin/users", p, actions)


@page(ADMIN)
async def roster_import(request: web.Request, p: Page) -> web.StreamResponse:
    """CSV import: shows every bad row with its line number; nothing is imported then."""
    report = None
    if request.method == "POST":
        upload = p.form.get("file")
        text = field(p, "csv")
        if upload is not None and hasattr(upload, "file"):
            text = upload.file.read().decode("utf-8-sig", errors="replace") or text
        report = await roster_csv.import_roster(
            request.app[DB], p.me.org_id, text, dry_run=bool(p.form.get("dry_run"))
        )
    return aiohttp_jinja2.render_template(
        "admin/import.html",
        request,
        p.context(report=report, **flash(request), **await _managed(request)),
    )


@page(ADMIN)
async def roster_export(request: web.Request, p: Page) -> web.StreamResponse:
    text = await roster_csv.export_roster(request.app[DB], p.me.org_id)
    return web.Response(
        text=text,
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="roster.csv"'},
    )


# --- classes -------------------------------------------------------------------------------------


@page(ADMIN)
async def classes(request: web.Request, p: Page) -> web.StreamResponse:
    db = request.app[DB]
    listing = await roster.list_classes(db, p.me.org_id, limit=500)
    teachers = (await roster.list_users(db, p.me.org_id, role="teacher", limit=500)).users
    students = (await roster.list_users(db, p.me.org_id, role="student", limit=500)).users
    return aiohttp_jinja2.render_template(
        "admin/classes.html",
        request,
        p.context(
            classes=listing.classes,
            teachers=teachers,
            students=students,
            **flash(request),
            **await _managed(request),
        ),
    )


@page(ADMIN)
async def classes_post(request: web.Request, p: Page) -> web.StreamResponse:
    db = request.app[DB]
    org = p.me.org_id

    async def create(p: Page) -> str:
        view = await roster.create_class(db, org, field(p, "name"), optional(p, "teacher_id"))
        return f"class {view.name} created"

    async def set_teacher(p: Page) -> str:
        view = await roster.update_class(
            db, org, field(p, "class_id"), teacher_id=optional(p, "teacher_id")
        )
        return f"teacher of {view.name} changed"

    async def enroll(p: Page) -> str:
        ids = [str(v) for v in p.form.getall("user_id", [])]
        view = await roster.enroll(db, org, field(p, "class_id"), ids)
        return f"{len(ids)} enrolled in {view.name}"

    async def unenroll(p: Page) -> str:
        view = await roster.unenroll(
            db, org, field(p, "class_id"), [field(p, "user_id")], now=request.app[CLOCK].now()
        )
        return f"removed from {view.name}"

    actions: dict[str, Action] = {
        "create": create,
        "set_teacher": set_teacher,
        "enroll": enroll,
        "unenroll": unenroll,
    }
    return await dispatch("/admin/classes", p, actions)


# --- catalog -------------------------------------------------------------------------------------


@page(ADMIN)
async def catalog_page(request: web.Request, p: Page) -> web.StreamResponse:
    tree = await catalog.course_tree(request.app[DB], p.me.org_id)
    return aiohttp_jinja2.render_template(
        "admin/catalog.html",
        request,
        p.context(courses=tree, **flash(request), **await _managed(request)),
    )


def _launch(p: Page) -> dict[str, Any]:
    raw = field(p, "launch") or "{}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AppError(422, "validation_error", f"launch parameters are not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise AppError(422, "validation_error", "launch parameters must be a JSON object")
    return value


def _duration(p: Page) -> int | None:
    raw = field(p, "duration_s")
    if not raw:
        return None
    if not raw.isdigit():
        raise AppError(422, "validation_error", "duration must be whole seconds")
    return int(raw)


@page(ADMIN)
async def catalog_post(request: web.Request, p: Page) -> web.StreamResponse:
    db = request.app[DB]
    org = p.me.org_id
    now = request.app[CLOCK].now()

    async def add_course(p: Page) -> str:
        view = await catalog.create_course(db, org, field(p, "title"), field(p, "description"))
        return f"course {view.title} created"

    async def add_module(p: Page) -> str:
        view = await catalog.create_module(db, org, field(p, "course_id"), field(p, "title"))
        return f"module {view.title} created"

    async def add_lesson(p: Page) -> str:
        view = await catalog.create_lesson(
            db,
            org,
            field(p, "module_id"),
            field(p, "title"),
            field(p, "apk_package"),
            launch=_launch(p),
            duration_s=_duration(p),
        )
        return f"lesson {view.title} created"

    async def edit_lesson(p: Page) -> str:
        view = await catalog.update_lesson(
            db,
            org,
            field(p, "lesson_id"),
            title=field(p, "title"),
            apk_package=field(p, "apk_package"),
            launch=_launch(p),
            duration_s=_duration(p),
        )
        return f"lesson {view.title} saved"

    async def delete_lesson(p: Page) -> str:
        await catalog.delete_lesson(db, org, field(p, "lesson_id"), now=now)
        return "lesson deleted"

    actions: dict[str, Action] = {
        "add_course": add_course,
        "add_module": add_module,
        "add_lesson": add_lesson,
        "edit_lesson": edit_lesson,
        "delete_lesson": delete_lesson,
    }
    return await dispatch("/admin/catalog", p, actions)


# --- devices (teachers approve too: see teacher pages) -------------------------------------------


@page(ADMIN)
async def devices_page(request: web.Request, p: Page) -> web.StreamResponse:
    db = request.app[DB]
    listing = await devices.list_devices(db, p.me.org_id, limit=500)
    students = (await roster.list_users(db, p.me.org_id, role="student", limit=500)).users
    return aiohttp_jinja2.render_template(
        "admin/devices.html",
        request,
        p.context(devices=listing.devices, students=students, **flash(request)),
    )


@page(ADMIN)
async def devices_post(request: web.Request, p: Page) -> web.StreamResponse:
    db = request.app[DB]
    org = p.me.org_id
    device_id = field(p, "device")
    now = request.app[CLOCK].now()

    async def approve(p: Page) -> str:
        view = await devices.approve_device(db, org, device_id)
        return f"{view.device_id} approved"

    async def block(p: Page) -> str:
        view = await devices.block_device(db, org, device_id, now=now)
        return f"{view.device_id} blocked"

    async def bind(p: Page) -> str:
        view = await devices.bind_device(db, org, device_id, field(p, "user_id"))
        who = view.bound_user.nickname if view.bound_user else "?"
        return f"{view.device_id} bound to {who}"

    async def unbind(p: Page) -> str:
        view = await devices.unbind_device(db, org, device_id)
        return f"{view.device_id} unbound"

    actions: dict[str, Action] = {
        "approve": approve,
        "block": block,
        "bind": bind,
        "unbind": unbind,
    }
    return await dispatch("/admin/devices", p, actions)


def install(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/", status)
    r.add_get("/admin/users", users)
    r.add_post("/admin/users", users_post)
    r.add_get("/admin/import", roster_import)
    r.add_post("/admin/import", roster_import)
    r.add_get("/admin/roster.csv", roster_export)
    r.add_get("/admin/classes", classes)
    r.add_post("/admin/classes", classes_post)
    r.add_get("/admin/catalog", catalog_page)
    r.add_post("/admin/catalog", catalog_post)
    r.add_get("/admin/backup", backup_download)
    r.add_get("/admin/devices", devices_page)
    r.add_post("/admin/devices", devices_post)


@page(ADMIN)
async def backup_download(request: web.Request, p: Page) -> web.StreamResponse:
    """A consistent copy of the database (SQLite online backup) while the box keeps running."""
    settings = request.app[SETTINGS]
    source = settings.sqlite_path
    if source is None:
        raise web.HTTPNotFound(text="backups are made by the database server here")
    stamp = request.app[CLOCK].now().strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="vrlms-backup-") as tmp:
        target = Path(tmp) / f"vrlms-{stamp}.sqlite3"
        await asyncio.to_thread(store_backup.backup, source, target)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.sqlite3",
                "Content-Disposition": f'attachment; filename="{target.name}"',
                "Content-Length": str(target.stat().st_size),
            }
        )
        await response.prepare(request)
        with target.open("rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, 1 << 20):
                await response.write(chunk)
        await response.write_eof()
        return response
