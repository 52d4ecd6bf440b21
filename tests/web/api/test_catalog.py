"""Courses, modules, lessons over HTTP: admins write, everyone in the org reads."""

from __future__ import annotations

from typing import Any

from tests.conftest import RunningBox
from tests.world import PASSWORD, bearer, login, make_org
from vrlms_edge.keys import DB


async def call(
    box: RunningBox, method: str, path: str, tok: str, body: Any = None
) -> tuple[int, Any]:
    async with box.http.request(method, path, json=body, headers=bearer(tok)) as resp:
        return resp.status, (await resp.json() if resp.status != 204 else None)


async def test_admin_builds_the_catalog_and_students_read_it(box: RunningBox) -> None:
    await make_org(box.app[DB])
    admin = (await login(box.http, "admin", password=PASSWORD))["token"]
    student = (await login(box.http, "student0"))["token"]
    status, course = await call(box, "POST", "/api/courses/", admin, {"title": "Biology"})
    assert status == 201 and course["modules"] == []
    status, module = await call(
        box, "POST", "/api/modules/", admin, {"course_id": course["id"], "title": "Cells"}
    )
    assert status == 201
    status, lesson = await call(
        box,
        "POST",
        "/api/lessons/",
        admin,
        {
            "module_id": module["id"],
            "title": "Inside a cell",
            "apk_package": "com.example.cell",
            "launch": {"scene": "nucleus", "lang": "de"},
            "duration_s": 900,
        },
    )
    assert status == 201 and lesson["course_id"] == course["id"]
    status, bad = await call(
        box,
        "POST",
        "/api/lessons/",
        admin,
        {"module_id": module["id"], "title": "x", "apk_package": "not a package"},
    )
    assert status == 422 and bad["error"]["detail"]["path"] == "$.apk_package"
    status, changed = await call(
        box, "PATCH", f"/api/lessons/{lesson['id']}/", admin, {"duration_s": None}
    )
    assert status == 200 and changed["duration_s"] is None and changed["title"] == "Inside a cell"
    # Students read the tree and single lessons; they cannot write.
    status, tree = await call(box, "GET", "/api/courses/", student)
    biology = next(c for c in tree["courses"] if c["id"] == course["id"])
    assert biology["modules"][0]["lessons"][0]["launch"] == {"scene": "nucleus", "lang": "de"}
    status, one = await call(box, "GET", f"/api/lessons/{lesson['id']}/", student)
    assert status == 200 and one["apk_package"] == "com.example.cell"
    status, _ = await call(box, "POST", "/api/courses/", student, {"title": "Nope"})
    assert status == 403
    # Pages: two at a time until next_cursor is null.
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        status, page = await call(box, "GET", f"/api/lessons/?limit=2{cursor}", student)
        seen += [item["id"] for item in page["lessons"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert len(seen) == len(set(seen)) == 4 and lesson["id"] in seen
    status, _ = await call(box, "DELETE", f"/api/courses/{course['id']}/", admin)
    assert status == 204
    status, gone = await call(box, "GET", f"/api/lessons/{lesson['id']}/", student)
    assert status == 404 and gone["error"]["code"] == "not_found"
