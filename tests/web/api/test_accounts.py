"""POST /api/login/, /api/logout/, GET /api/me/ over HTTP: answer shape, Retry-After, a NAT'ed
classroom, token expiry and logout, device rules, input errors."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from tests import conftest
from tests.conftest import RunningBox
from tests.world import PASSWORD, PIN, bearer, login, make_device, make_org
from vrlms_edge.keys import DB
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.models import DeviceStatus


async def test_login_answer_has_the_protocol_shape(box: RunningBox) -> None:
    world = await make_org(box.app[DB])
    answer = await login(box.http, "student0")
    assert set(answer) == {"token", "role", "user", "org", "expires_at"}
    assert answer["role"] == "student"
    assert answer["user"] == {
        "id": world.students[0].id,
        "nickname": "student0",
        "display_name": "Student0",
    }
    assert answer["org"] == {"id": world.org.id, "slug": "school", "name": "School School"}
    assert answer["expires_at"].endswith("Z")
    async with box.http.get("/api/me/", headers=bearer(answer["token"])) as resp:
        me = await resp.json()
    assert me["user"]["id"] == world.students[0].id and me["device_id"] is None


async def test_locked_out_answers_429_with_retry_after(box: RunningBox) -> None:
    await make_org(box.app[DB])
    statuses = []
    for _ in range(5):
        async with box.http.post("/api/login/", json={"nickname": "teacher", "pin": "9999"}) as r:
            statuses.append(r.status)
            body = await r.json()
            retry = r.headers.get("Retry-After")
    assert statuses == [401, 401, 401, 401, 429]
    assert body["error"]["code"] == "locked_out" and retry == "30"
    async with box.http.post("/api/login/", json={"nickname": "teacher", "pin": PIN}) as r:
        assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= 30


async def test_thirty_headsets_behind_one_address_all_log_in(tmp_path: Path) -> None:
    settings = conftest.test_settings(tmp_path / "data", address_failure_limit=5)
    box = await conftest.start_box(settings)
    try:
        world = await make_org(box.app[DB], students=30)
        for i in range(30):
            await make_device(box.app[DB], world, f"hs-{i:02d}")

        async def one(i: int) -> int:
            body = {"nickname": f"student{i}", "pin": PIN, "device_id": f"hs-{i:02d}"}
            async with box.http.post("/api/login/", json=body) as resp:
                return resp.status

        statuses = await asyncio.gather(*(one(i) for i in range(30)))
        assert statuses == [200] * 30
        # ... while failures from that same address are limited (5 here).
        bad = []
        for i in range(6):
            async with box.http.post(
                "/api/login/", json={"nickname": f"student{i}", "pin": "0000"}
            ) as resp:
                bad.append(resp.status)
        assert bad == [401, 401, 401, 401, 401, 429]
    finally:
        await conftest.stop_box(box)


async def test_token_expires_and_logout_revokes(tmp_path: Path) -> None:
    fake = [1000.0]
    clock = ServerClock(monotonic=lambda: fake[0])
    settings = conftest.test_settings(tmp_path / "data", token_ttl_s=60)
    box = await conftest.start_box(settings, clock=clock)
    try:
        await make_org(box.app[DB])
        first = (await login(box.http, "teacher"))["token"]
        second = (await login(box.http, "teacher"))["token"]
        async with box.http.get("/api/me/", headers=bearer(first)) as resp:
            assert resp.status == 200
        async with box.http.post("/api/logout/", headers=bearer(first)) as resp:
            assert resp.status == 204
        async with box.http.get("/api/me/", headers=bearer(first)) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"
        async with box.http.get("/api/me/", headers=bearer(second)) as resp:
            assert resp.status == 200  # only the token used was revoked
        fake[0] += 61
        async with box.http.get("/api/me/", headers=bearer(second)) as resp:
            assert resp.status == 401
    finally:
        await conftest.stop_box(box)


async def test_device_paths_over_http(box: RunningBox) -> None:
    world = await make_org(box.app[DB])
    # A headset announces itself before anyone logs in: pending.
    async with box.http.post(
        "/api/devices/register/",
        json={"device_id": "HS-42", "model": "DPVR P1", "app_version": "1.2"},
    ) as resp:
        announced = await resp.json()
    assert resp.status == 200 and announced["status"] == "pending"
    body = {"nickname": "student0", "pin": PIN, "device_id": "HS-42"}
    async with box.http.post("/api/login/", json=body) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "device_pending"
    teacher = bearer((await login(box.http, "teacher"))["token"])
    async with box.http.get("/api/devices/?status=pending", headers=teacher) as resp:
        listed = await resp.json()
    assert [d["device_id"] for d in listed["devices"]] == ["HS-42"]
    async with box.http.post(f"/api/devices/{announced['id']}/approve/", headers=teacher) as r:
        assert (await r.json())["status"] == "approved"
    async with box.http.post(
        f"/api/devices/{announced['id']}/bind/",
        json={"user_id": world.students[0].id},
        headers=teacher,
    ) as r:
        assert (await r.json())["bound_user"]["nickname"] == "student0"
    answer = await login(box.http, "student0", device_id="HS-42")
    async with box.http.get("/api/me/", headers=bearer(answer["token"])) as resp:
        assert (await resp.json())["device_id"] == "HS-42"
    async with box.http.post("/api/login/", json={**body, "nickname": "student1"}) as resp:
        assert (await resp.json())["error"]["code"] == "device_bound_to_other"
    async with box.http.post(f"/api/devices/{announced['id']}/block/", headers=teacher) as r:
        assert (await r.json())["status"] == "blocked"
    # Blocking revoked the token issued to that headset.
    async with box.http.get("/api/me/", headers=bearer(answer["token"])) as resp:
        assert resp.status == 401
    async with box.http.post("/api/login/", json=body) as resp:
        assert (await resp.json())["error"]["code"] == "device_blocked"
    await make_device(box.app[DB], world, "HS-7", status=DeviceStatus.approved)


async def test_bad_input_is_a_clear_4xx(box: RunningBox) -> None:
    await make_org(box.app[DB])
    async with box.http.post("/api/login/", data=b"{nope") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_json"
    async with box.http.post("/api/login/", json={"nickname": 5, "pin": PIN}) as resp:
        error = (await resp.json())["error"]
    assert resp.status == 422 and error["code"] == "validation_error"
    assert error["detail"]["path"] == "$.nickname"
    async with box.http.post("/api/login/", json={"pin": PIN}) as resp:
        assert resp.status == 422
    async with box.http.post("/api/login/", data=b"x" * (1024 * 1024 + 10)) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "body_too_large"
    teacher = bearer((await login(box.http, "teacher"))["token"])
    for path in (
        "/api/sessions/not-a-uuid/",
        "/api/sessions/" + "9" * 60 + "/",
        "/api/classes/%00%ff/",
        "/api/lessons/../",
    ):
        async with box.http.get(path, headers=teacher) as resp:
            assert resp.status == 404, path
            assert (await resp.json())["error"]["code"] == "not_found"
    for query in ("limit=99999999999999999999999", "limit=0", "cursor=%%%", "from=yesterday"):
        async with box.http.get(f"/api/sessions/?{query}", headers=teacher) as resp:
            assert resp.status == 422, query
    async with box.http.post(
        "/api/session/start/",
        json={"session_id": "x", "position_ms": 10**30},
        headers=teacher,
    ) as resp:
        assert resp.status == 422


async def test_foreign_cursors_are_refused_not_crashed_on(box: RunningBox) -> None:
    await make_org(box.app[DB])
    tok = bearer((await login(box.http, "admin", password=PASSWORD))["token"])
    lists = ("lessons", "courses", "users", "classes", "devices", "sessions")
    for path in (f"/api/{name}/" for name in lists):
        for key in (["x"], [-1], ["a", "b"], [1.5], []):
            cursor = base64.urlsafe_b64encode(repr(key).replace("'", '"').encode()).decode()
            async with box.http.get(f"{path}?cursor={cursor.rstrip('=')}", headers=tok) as resp:
                assert resp.status in (200, 422), (path, key, resp.status)
