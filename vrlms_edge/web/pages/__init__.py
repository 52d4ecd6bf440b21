"""The browser side of the box: the teacher dashboard and the admin panel (server-rendered)."""

from __future__ import annotations

from aiohttp import web

from vrlms_edge.web.pages import account, admin, teacher


def install(app: web.Application) -> None:
    account.install(app)
    teacher.install(app)
    admin.install(app)
