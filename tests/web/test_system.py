"""GET /api/health, GET /index/ and JSON errors under /api/."""

from __future__ import annotations

import signal
import time

import aiohttp

from tests.conftest import RunningBox, ServeProcess


async def test_health_reports_box_and_database(box: RunningBox) -> None:
    async with box.http.get("/api/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["db"] == "ok"
    assert body["box"]["name"] == "VR Classroom"
    assert len(body["box"]["id"]) == 36
    assert body["uptime_s"] >= 0


async def test_index_page_shows_box_and_links(box: RunningBox) -> None:
    async with box.http.get("/index/") as resp:
        assert resp.status == 200
        html = await resp.text()
    assert "VR Classroom" in html
    for link in ("/dashboard/", "/admin/", "/api/docs"):
        assert f'href="{link}"' in html


async def test_unknown_api_path_is_json_404(box: RunningBox) -> None:
    async with box.http.get("/api/no-such-thing") as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body == {"error": {"code": "not_found", "message": "Not Found"}}


async def test_wrong_method_is_json_405(box: RunningBox) -> None:
    async with box.http.delete("/api/health") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


def test_serve_prints_listening_and_stops_on_sigterm(serve_process: ServeProcess) -> None:
    async def probe() -> int:
        async with aiohttp.ClientSession() as s, s.get(serve_process.url + "/api/health") as r:
            return r.status

    import asyncio

    assert asyncio.run(probe()) == 200
    started = time.monotonic()
    serve_process.proc.send_signal(signal.SIGTERM)
    assert serve_process.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
