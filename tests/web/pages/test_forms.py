"""web/pages/forms.py over real HTTP: a form page POST runs the action its `op` names and
redirects back with that action's message, the domain error, or "unknown action"."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.conftest import RunningBox
from tests.world import PASSWORD, OrgWorld, make_org
from vrlms_edge.keys import DB

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class AdminBrowser:
    http: aiohttp.ClientSession
    csrf: str
    world: OrgWorld

    async def post_users(self, **form: str) -> tuple[str, dict[str, str]]:
        """POST /admin/users; the redirect's path and flash message."""
        data = {"csrf": self.csrf, **form}
        async with self.http.post("/admin/users", data=data, allow_redirects=False) as resp:
            assert resp.status == 302
            target = urlsplit(resp.headers["Location"])
        return target.path, {k: v[0] for k, v in parse_qs(target.query).items()}


@pytest.fixture
async def admin(box: RunningBox) -> AsyncIterator[AdminBrowser]:
    """The admin's cookie session (the jar accepts cookies of 127.0.0.1) and CSRF token."""
    world = await make_org(box.app[DB])
    async with aiohttp.ClientSession(box.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        form = {"nickname": world.admin.nickname, "password": PASSWORD}
        async with http.post("/login/", data=form, allow_redirects=False) as resp:
            assert resp.status == 302
        async with http.get("/admin/users") as resp:
            assert resp.status == 200
            found = CSRF.search(await resp.text())
        assert found is not None
        yield AdminBrowser(http=http, csrf=found.group(1), world=world)


async def test_op_runs_its_action_and_redirects_with_its_message(admin: AdminBrowser) -> None:
    student = admin.world.students[0]
    assert await admin.post_users(op="disable", user_id=student.id) == (
        "/admin/users",
        {"ok": f"{student.nickname} disabled"},
    )


async def test_domain_error_and_unknown_op_become_the_message(admin: AdminBrowser) -> None:
    assert await admin.post_users(op="disable", user_id=admin.world.admin.id) == (
        "/admin/users",
        {"error": "you cannot disable your own account"},
    )
    for op in ("bogus", ""):
        assert await admin.post_users(op=op) == ("/admin/users", {"error": "unknown action"})
