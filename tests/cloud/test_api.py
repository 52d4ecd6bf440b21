"""The org admin API and pages: password login, enrollment tokens, the box list with last
sync/version/health, and org-wide results across boxes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import stop_box
from tests.orgserver import RunningCloud, enrolled_box, make_results, seed_org
from vrlms_edge.cloud.orgs import add_admin
from vrlms_edge.keys import CLOCK, DB, SETTINGS
from vrlms_edge.sync.worker import sync_once

pytestmark = pytest.mark.postgres


async def test_admin_sees_boxes_and_results_of_own_org(cloud: RunningCloud, tmp_path: Path) -> None:
    world = await seed_org(cloud.db, "delta")
    other = await seed_org(cloud.db, "epsilon")
    await add_admin(cloud.db, "delta", "boss", "correct horse battery")
    await add_admin(cloud.db, "epsilon", "boss", "another long password")

    bad = await cloud.http.post(
        "/api/cloud/login/", json={"org": "delta", "nickname": "boss", "password": "wrong pass!"}
    )
    assert bad.status == 401 and (await bad.json())["error"]["code"] == "invalid_credentials"
    login = await cloud.http.post(
        "/api/cloud/login/",
        json={"org": "delta", "nickname": "boss", "password": "correct horse battery"},
    )
    assert login.status == 200
    body = await login.json()
    assert body["org"]["slug"] == "delta" and body["role"] == "admin"
    auth = {"Authorization": f"Bearer {body['token']}"}

    made = await cloud.http.post("/api/cloud/enrollment-tokens/", json={}, headers=auth)
    assert made.status == 201 and (await made.json())["token"].startswith("vbe_")
    assert (await cloud.http.get("/api/cloud/boxes/")).status == 401

    box = await enrolled_box(cloud, world, tmp_path / "box")
    other_box = await enrolled_box(cloud, other, tmp_path / "other")
    try:
        await make_results(box.app[DB], world, 3)
        await make_results(other_box.app[DB], other, 2)
        for b in (box, other_box):
            await sync_once(b.app[DB], b.app[SETTINGS], b.app[CLOCK])

        boxes = (await (await cloud.http.get("/api/cloud/boxes/", headers=auth)).json())["boxes"]
        assert len(boxes) == 1
        assert boxes[0]["last_sync_at"] and boxes[0]["version"]
        assert boxes[0]["health"] == {"outbox": 3}  # as reported before the push

        got = await cloud.http.get("/api/cloud/results/", headers=auth)
        results = (await got.json())["results"]
        assert len(results) == 3 and {r["box_id"] for r in results} == {boxes[0]["id"]}
        assert all(r["lesson_title"] in ("L0", "L1") for r in results)
        narrowed = await cloud.http.get(
            "/api/cloud/results/", params={"user_id": world.students[0].id}, headers=auth
        )
        assert len((await narrowed.json())["results"]) == 1

        page = await cloud.http.get("/cloud/results", headers=auth)
        html = await page.text()
        assert page.status == 200 and html.count("<tr><td>s") == 3
        anonymous = await cloud.http.get("/cloud/results", allow_redirects=False)
        assert anonymous.status == 302
        form = await cloud.http.post(
            "/cloud/login",
            data={"org": "delta", "nickname": "boss", "password": "correct horse battery"},
            allow_redirects=False,
        )
        assert form.status == 302 and "vrlms_session" in form.cookies
        listing = await cloud.http.get("/cloud/boxes", headers=auth)
        assert box.app[DB] and "VR Classroom" in await listing.text()
    finally:
        await stop_box(box)
        await stop_box(other_box)


async def test_roster_authored_through_the_shared_rest_api_reaches_the_box(
    cloud: RunningCloud, tmp_path: Path
) -> None:
    world = await seed_org(cloud.db, "zeta")
    await add_admin(cloud.db, "zeta", "boss", "correct horse battery")
    login = await cloud.http.post(
        "/api/login/", json={"org": "zeta", "nickname": "boss", "password": "correct horse battery"}
    )
    assert login.status == 200, await login.text()
    auth = {"Authorization": f"Bearer {(await login.json())['token']}"}
    box = await enrolled_box(cloud, world, tmp_path / "box")
    try:
        made = await cloud.http.post(
            "/api/users/",
            json={"role": "student", "nickname": "ada", "display_name": "Ada", "pin": "4321"},
            headers=auth,
        )
        assert made.status == 201, await made.text()
        klass = await cloud.http.post("/api/classes/", json={"name": "6C"}, headers=auth)
        assert klass.status == 201, await klass.text()
        class_id = (await klass.json())["id"]
        enrolled_ = await cloud.http.post(
            f"/api/classes/{class_id}/enroll/",
            json={"user_ids": [(await made.json())["id"]]},
            headers=auth,
        )
        assert enrolled_.status == 200, await enrolled_.text()

        await sync_once(box.app[DB], box.app[SETTINGS], box.app[CLOCK])
        # The student logs in on the box with the PIN set on the org server.
        on_box = await box.http.post(
            "/api/login/", json={"org": "zeta", "nickname": "ada", "pin": "4321"}
        )
        assert on_box.status == 200, await on_box.text()
        # The box's admin (pulled too) may not author the roster there: 409.
        admin = await box.http.post(
            "/api/login/",
            json={"org": "zeta", "nickname": "boss", "password": "correct horse battery"},
        )
        box_auth = {"Authorization": f"Bearer {(await admin.json())['token']}"}
        refused = await box.http.post(
            "/api/users/",
            json={"role": "student", "nickname": "eve", "display_name": "Eve", "pin": "1111"},
            headers=box_auth,
        )
        assert refused.status == 409
        assert (await refused.json())["error"]["code"] == "managed_by_org_server"
        renamed = await box.http.patch(
            f"/api/classes/{class_id}/", json={"name": "hacked"}, headers=box_auth
        )
        assert renamed.status == 409
        classes = await box.http.get("/api/classes/", headers=box_auth)
        assert "6C" in {c["name"] for c in (await classes.json())["classes"]}
        # Teachers and students have no business on the org server.
        teacher = await cloud.http.get("/api/users/", headers={"Authorization": "Bearer nope"})
        assert teacher.status == 401
    finally:
        await stop_box(box)
