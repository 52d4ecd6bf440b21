"""Users and classes over HTTP: admin creates, disables, resets; enrollment by staff."""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningBox
from tests.web.api.test_catalog import call
from tests.world import PASSWORD, login, make_org
from vrlms_edge.keys import DB


async def test_admin_manages_users(box: RunningBox) -> None:
    await make_org(box.app[DB])
    admin = (await login(box.http, "admin", password=PASSWORD))["token"]
    status, user = await call(
        box,
        "POST",
        "/api/users/",
        admin,
        {"role": "student", "nickname": "neo", "display_name": "Neo", "pin": "5555"},
    )
    assert status == 201 and user["has_pin"] and not user["has_password"]
    status, dup = await call(
        box,
        "POST",
        "/api/users/",
        admin,
        {"role": "student", "nickname": "neo", "display_name": "Neo", "pin": "5555"},
    )
    assert (status, dup["error"]["code"]) == (409, "nickname_taken")
    status, bad = await call(
        box, "POST", "/api/users/", admin, {"role": "admin", "nickname": "x", "display_name": "X"}
    )
    assert status == 422 and bad["error"]["detail"]["path"] == "$.password"
    neo = (await login(box.http, "neo", pin="5555"))["token"]
    # Lock neo out, then a PIN reset lets them in again at once.
    for _ in range(5):
        async with box.http.post("/api/login/", json={"nickname": "neo", "pin": "0000"}) as r:
            last = r.status
    assert last == 429
    status, _ = await call(box, "POST", f"/api/users/{user['id']}/pin/", admin, {"pin": "6666"})
    assert status == 200
    await login(box.http, "neo", pin="6666")
    # Disabling ends their tokens at once.
    status, disabled = await call(box, "POST", f"/api/users/{user['id']}/disable/", admin)
    assert disabled["disabled"] is True
    async with box.http.get("/api/me/", headers={"Authorization": f"Bearer {neo}"}) as r:
        assert r.status == 401
    async with box.http.post("/api/login/", json={"nickname": "neo", "pin": "6666"}) as r:
        assert r.status == 401
    await call(box, "POST", f"/api/users/{user['id']}/enable/", admin)
    await login(box.http, "neo", pin="6666")
    status, page = await call(box, "GET", "/api/users/?role=student&limit=2", admin)
    assert [u["role"] for u in page["users"]] == ["student", "student"]
    assert page["next_cursor"] is not None


async def test_classes_and_enrollment(box: RunningBox) -> None:
    world = await make_org(box.app[DB])
    admin = (await login(box.http, "admin", password=PASSWORD))["token"]
    teacher = (await login(box.http, "teacher"))["token"]
    status, klass = await call(
        box, "POST", "/api/classes/", admin, {"name": "9c", "teacher_id": world.teacher.id}
    )
    assert status == 201 and klass["teacher"]["id"] == world.teacher.id
    ids = [s.id for s in world.students[:2]]
    status, enrolled = await call(
        box, "POST", f"/api/classes/{klass['id']}/enroll/", teacher, {"user_ids": ids}
    )
    assert status == 200 and {s["id"] for s in enrolled["students"]} == set(ids)
    status, left = await call(
        box, "POST", f"/api/classes/{klass['id']}/unenroll/", teacher, {"user_ids": ids[:1]}
    )
    assert [s["id"] for s in left["students"]] == ids[1:]
    # Another teacher may not enroll into this class.
    other = (await login(box.http, "teacher2"))["token"]
    status, body = await call(
        box, "POST", f"/api/classes/{klass['id']}/enroll/", other, {"user_ids": ids}
    )
    assert (status, body["error"]["code"]) == (403, "not_your_class")
    student = (await login(box.http, "student1"))["token"]
    status, mine = await call(box, "GET", "/api/classes/", student)
    assert {c["name"] for c in mine["classes"]} == {"Class 7b", "9c"}
    path = f"/api/classes/{klass['id']}/"
    status, renamed = await call(box, "PATCH", path, admin, {"name": "9d"})
    assert renamed["name"] == "9d"
    status, taken = await call(box, "POST", "/api/classes/", admin, {"name": "9d"})
    assert (status, taken["error"]["code"]) == (409, "class_name_taken")
    body: Any = None
    status, body = await call(box, "DELETE", path, admin)
    assert status == 204 and body is None
