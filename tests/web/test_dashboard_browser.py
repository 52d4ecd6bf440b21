"""The dashboard and admin panel in the real Chromium (Playwright), against the real box with
the demo school, and five reference headset clients following the teacher."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningBox, need
from tests.live.support import eventually
from vrlms_edge.domain import roster
from vrlms_edge.domain.demo import load_demo
from vrlms_edge.headset.client import Credentials, HeadsetClient
from vrlms_edge.keys import DB

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots land here (CI keeps them as artifacts); VRLMS_SCREENSHOTS=docs/screenshots
# refreshes the committed ones.
ARTIFACTS = Path(os.environ.get("VRLMS_SCREENSHOTS", "test-artifacts/screenshots"))
TIMEOUT_MS = 15_000
VIEW_CLIP = {"x": 0, "y": 0, "width": 160, "height": 90}

pytestmark = pytest.mark.browser


@pytest.fixture
def chromium() -> Path:
    need(CHROMIUM.exists(), "Chromium is not installed (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest.fixture
async def page(chromium: Path) -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - installed with the test extra
        need(False, "playwright is not installed (pip install -e '.[test]')")
        raise
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(chromium),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        context = await browser.new_context(viewport={"width": 1100, "height": 900})
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        page.dialogs = dialogs
        try:
            yield page
        finally:
            await context.close()
            await browser.close()
    assert not dialogs, f"a page opened a dialog (script ran?): {dialogs}"


@pytest.fixture
async def demo_box(box: RunningBox) -> RunningBox:
    await load_demo(box.app[DB])
    return box


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def log_in(page: Any, box: RunningBox, nickname: str, password: str) -> None:
    await page.goto(box.url + "/login/")
    await page.fill("#nickname", nickname)
    await page.fill("#password", password)
    await page.click("button[type=submit]")


async def test_teacher_runs_a_lesson_with_five_headsets(demo_box: RunningBox, page: Any) -> None:
    box = demo_box
    await log_in(page, box, "teacher", "teacher-demo-pass")
    await page.wait_for_url("**/dashboard/")
    await shot(page, "dashboard-home")

    # Build a session of two lessons from the catalog.
    await page.fill("#new-title", "Browser lesson")
    await page.click("form[action='/dashboard/sessions/new'] button[type=submit]")
    await page.wait_for_url("**/dashboard/sessions/*")
    session_id = urlsplit(page.url).path.rstrip("/").rsplit("/", 1)[-1]
    add_buttons = page.locator("button[aria-label^='Add ']")
    first, second = await add_buttons.nth(0).get_attribute("aria-label"), None
    await add_buttons.nth(0).click()
    await page.wait_for_selector("#session-lessons li")
    second = await add_buttons.nth(1).get_attribute("aria-label")
    await add_buttons.nth(1).click()
    await page.wait_for_function("document.querySelectorAll('#session-lessons li').length === 2")
    titles = await page.locator("#session-lessons li strong").all_inner_texts()
    assert titles == [first.removeprefix("Add "), second.removeprefix("Add ")]  # type: ignore[union-attr]

    # Five headsets (the reference client) join.
    headsets = [
        HeadsetClient(box.url, credentials=Credentials(f"student0{n}", f"100{n}", f"DEMO-HS-0{n}"))
        for n in range(1, 6)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(h.run(stop)) for h in headsets]
    try:
        await page.wait_for_function(
            "document.querySelectorAll('#tiles .tile.online').length === 5"
        )
        assert await page.locator("#tiles .tile").count() == 30  # the whole class, 25 offline

        # Play: every headset applies the new rev and its tile shows it.
        await page.click("button[data-action=play]")
        await page.wait_for_selector("#state-line[data-status=playing]")
        rev = int(await page.get_attribute("#state-line", "data-rev") or "0")
        for h in headsets:
            await eventually(
                lambda h=h: h.playback.state is not None and h.playback.state.rev == rev, 10
            )
        await page.wait_for_function(
            f"document.querySelectorAll('#tiles .tile[data-applied-rev=\"{rev}\"]').length === 5"
        )
        await shot(page, "dashboard-live-grid")

        # A headset sends its view: the tile shows it (served from GET .../frame.jpg).
        jpeg = await page.screenshot(type="jpeg", quality=60, clip=VIEW_CLIP)
        await headsets[1].send_view(jpeg)
        tile = f".tile[data-user-id='{await _user_id(box, 'student02')}'] img.thumb"
        await page.wait_for_function(
            f'(() => {{ const i = document.querySelector("{tile}");'
            " return i && !i.hidden && i.complete && i.naturalWidth > 0; })()"
        )

        # A headset reports progress: its tile's bar moves.
        headsets[0].record("progress", {"progress": 0.5})
        await page.wait_for_selector(".tile[data-progress='50']")

        # Eyes on me, then release.
        await page.fill("#attention-message", "Look at the board")
        await page.click("#attention-button")
        await page.wait_for_selector("#attention-button[aria-pressed=true]")
        await eventually(lambda: _attention(headsets) == [True] * 5, 10)
        await page.click("#attention-button")
        await page.wait_for_selector("#attention-button[aria-pressed=false]")
        await eventually(lambda: _attention(headsets) == [False] * 5, 10)

        await page.click("button[data-action=stop]")
        await page.wait_for_selector("#state-line[data-status=stopped]")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # Results: the numbers and the CSV.
    await page.goto(f"{box.url}/dashboard/sessions/{session_id}/results")
    student01 = await _user_id(box, "student01")
    row = page.locator(f"#results-table tr[data-user-id='{student01}']").first
    assert await row.locator("td[data-progress]").get_attribute("data-progress") == "50"
    assert await page.locator("svg.chart").count() >= 2
    await shot(page, "dashboard-results")
    async with page.expect_download() as info:
        await page.click("a[download]")
    download = await info.value
    text = await asyncio.to_thread(Path(await download.path()).read_text)
    rows = list(csv.DictReader(io.StringIO(text)))
    mine = [r for r in rows if r["user_id"] == student01]
    assert mine and float(mine[0]["progress"]) == 0.5


def _attention(headsets: list[HeadsetClient]) -> list[bool]:
    return [bool(h.playback.state and h.playback.state.attention.on) for h in headsets]


async def _user_id(box: RunningBox, nickname: str) -> str:
    org = await roster.box_org(box.app[DB])
    return (await roster.find_user(box.app[DB], org.id, nickname)).id


BAD_ROSTER = """class,nickname,display_name,role,pin,device_id
Room 9,newkid1,New Kid One,student,1111,NEW-HS-1
Room 9,newkid2,New Kid Two,student,12a4,NEW-HS-2
Room 9,newkid3,New Kid Three,student,3333,NEW-HS-3
"""


async def test_admin_import_with_a_bad_row_imports_nothing(demo_box: RunningBox, page: Any) -> None:
    await log_in(page, demo_box, "admin", "admin-demo-pass")
    await page.wait_for_url("**/admin/")
    await shot(page, "admin-status")
    await page.goto(demo_box.url + "/admin/import")
    await page.fill("#csv", BAD_ROSTER)
    await page.click("form[action='/admin/import'] button[type=submit]")
    error = page.locator("#import-report tr.row-error")
    assert await error.count() == 1
    assert (await error.locator("td").first.inner_text()).strip() == "3"
    assert "PIN" in await error.inner_text() or "pin" in await error.inner_text()
    await shot(page, "admin-import-errors")
    await page.goto(demo_box.url + "/admin/users")
    assert await page.locator("td", has_text="newkid1").count() == 0


async def test_a_display_name_with_markup_is_shown_as_text(demo_box: RunningBox, page: Any) -> None:
    org = await roster.box_org(demo_box.app[DB])
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await roster.create_user(demo_box.app[DB], org.id, "student", "evil", evil, pin="4321")
    await log_in(page, demo_box, "admin", "admin-demo-pass")
    await page.goto(demo_box.url + "/admin/users")
    cell = page.locator("td", has_text="<script>")
    assert await cell.count() == 1
    assert (await cell.inner_text()).strip() == evil
    assert await page.locator("img[src=x]").count() == 0
    # The fixture asserts that no dialog (a script) ever ran.


async def test_pages_need_the_right_role(demo_box: RunningBox, page: Any) -> None:
    await page.goto(demo_box.url + "/admin/users")
    assert "/login/" in page.url
    await log_in(page, demo_box, "teacher", "teacher-demo-pass")
    await page.wait_for_url("**/dashboard/")
    response = await page.goto(demo_box.url + "/admin/users")
    assert response is not None and response.status == 403
    await page.goto(demo_box.url + "/dashboard/")
    await page.click("header form button")  # log out
    await page.wait_for_url("**/login/")
    await page.goto(demo_box.url + "/dashboard/")
    assert "/login/" in page.url


async def test_teacher_approves_a_pending_headset(demo_box: RunningBox, page: Any) -> None:
    box = demo_box
    org = await roster.box_org(box.app[DB])
    await roster.create_user(box.app[DB], org.id, "student", "newkid", "New Kid", pin="2468")
    login = {"nickname": "newkid", "pin": "2468", "device_id": "NEW-HEADSET-7"}
    async with box.http.post("/api/login/", json=login) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "device_pending"
    await log_in(page, box, "teacher", "teacher-demo-pass")
    await page.wait_for_url("**/dashboard/")
    await page.goto(box.url + "/dashboard/devices")
    row = page.locator("tr", has_text="NEW-HEADSET-7")
    await row.locator("button[type=submit]").click()
    await page.wait_for_selector(".flash.ok")
    assert await page.locator("tr", has_text="NEW-HEADSET-7").count() == 0
    async with box.http.post("/api/login/", json=login) as resp:
        assert resp.status == 200
