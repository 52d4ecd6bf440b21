"""Signed sync requests: unknown boxes, bad or tampered signatures, stale timestamps and
replays are refused with 401 and change nothing."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from yarl import URL

from tests.conftest import stop_box
from tests.orgserver import RunningCloud, enrolled_box, make_results, seed_org
from vrlms_edge.keys import DB
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.models import OutboxEntry, Result
from vrlms_edge.sync import signing
from vrlms_edge.sync.enrollment import enrolled
from vrlms_edge.sync.identity import load_or_create_key, public_bytes
from vrlms_edge.sync.messages import PushItem, PushRequest

pytestmark = pytest.mark.postgres


async def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status, await r.json()


async def test_replayed_tampered_stale_and_unknown_are_refused(
    cloud: RunningCloud, tmp_path: Path
) -> None:
    world = await seed_org(cloud.db, "east")
    box = await enrolled_box(cloud, world, tmp_path / "box")
    try:
        ident = await enrolled(box.app[DB])
        assert ident is not None
        key = load_or_create_key(tmp_path / "box")
        await make_results(box.app[DB], world, 1)
        async with box.app[DB].read() as s:
            row = (await s.execute(select(OutboxEntry))).scalar_one()
        body = msgspec.json.encode(
            PushRequest(
                items=[PushItem(entity=row.entity, id=row.entity_id, version=1, data=row.payload)]
            )
        )
        url = URL(cloud.url) / "api/sync/push"
        now = ServerClock().now_ms()

        def signed(payload: bytes, at_ms: int = now, box_id: str = ident.box_id) -> dict[str, str]:
            return signing.sign(key, box_id, "POST", url.raw_path_qs, payload, at_ms)

        # Tampered: one byte of the body changed after signing.
        headers = signed(body)
        status, answer = await _post(
            str(url), body.replace(b'"version":1', b'"version":9'), headers
        )
        assert (status, answer["error"]["code"]) == (401, "bad_signature")  # type: ignore[index]
        # Stale: signed ten minutes ago.
        status, answer = await _post(str(url), body, signed(body, now - 600_000))
        assert (status, answer["error"]["code"]) == (401, "stale_request")  # type: ignore[index]
        # Unknown box: a well-formed signature from a box id the server never enrolled.
        status, answer = await _post(str(url), body, signed(body, box_id="not-a-box"))
        assert (status, answer["error"]["code"]) == (401, "unknown_box")  # type: ignore[index]
        # Unsigned.
        status, answer = await _post(str(url), body, {})
        assert (status, answer["error"]["code"]) == (401, "unsigned_request")  # type: ignore[index]
        async with cloud.db.read() as s:
            assert (await s.execute(select(func.count()).select_from(Result))).scalar_one() == 0

        # A good request is accepted once; the identical request again is a replay.
        headers = signed(body)
        status, answer = await _post(str(url), body, headers)
        assert status == 200, answer
        status, answer = await _post(str(url), body, headers)
        assert (status, answer["error"]["code"]) == (401, "replayed_request")  # type: ignore[index]
        async with cloud.db.read() as s:
            assert (await s.execute(select(func.count()).select_from(Result))).scalar_one() == 1

        # The query string is signed too: a changed cursor breaks the signature.
        pull = (URL(cloud.url) / "api/sync/pull").with_query({"cursor": 0, "limit": 10})
        headers = signing.sign(key, ident.box_id, "GET", pull.raw_path_qs, b"", now)
        moved = pull.with_query({"cursor": 5, "limit": 10})
        async with aiohttp.ClientSession() as http, http.get(moved, headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "bad_signature"
    finally:
        await stop_box(box)


def test_signature_covers_every_part() -> None:
    key = Ed25519PrivateKey.generate()
    h = signing.sign(key, "box1", "POST", "/api/sync/push?a=1", b"{}", 1000)
    args: list[object] = [
        "POST",
        "/api/sync/push?a=1",
        "box1",
        1000,
        h[signing.NONCE_HEADER],
        b"{}",
    ]
    sig = h[signing.SIGNATURE_HEADER]
    pub = public_bytes(key)
    assert signing.verify(pub, sig, *args)  # type: ignore[arg-type]
    for i, other in enumerate(("GET", "/api/sync/push?a=2", "box2", 1001, "othernonce", b"[]")):
        changed = list(args)
        changed[i] = other
        assert not signing.verify(pub, sig, *changed)  # type: ignore[arg-type]
