"""The self-signed certificate: made once, private key 0600, served over https/wss."""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
import stat
from pathlib import Path

import aiohttp

from tests.conftest import cli_env, spawn_serve
from tests.conftest import test_settings as box_settings
from vrlms_edge.app import create_app
from vrlms_edge.keys import TLS
from vrlms_edge.tls import CERT_FILE, KEY_FILE, ensure_certificate

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_certificate_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path, "Room 12", NOW)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert len(first.fingerprint) == 64
    der = ssl.PEM_cert_to_DER_cert((tmp_path / CERT_FILE).read_text())
    assert hashlib.sha256(der).hexdigest() == first.fingerprint
    again = ensure_certificate(tmp_path, "Room 12", NOW)
    assert again.fingerprint == first.fingerprint


async def test_tls_setting_puts_the_identity_on_the_app(tmp_path: Path) -> None:
    app = create_app(box_settings(tmp_path / "d", tls=True))
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    try:
        identity = app.get(TLS)
        assert identity is not None
        assert identity.fingerprint == ensure_certificate(tmp_path / "d", "x", NOW).fingerprint
    finally:
        await runner.cleanup()
    plain = create_app(box_settings(tmp_path / "p"))
    runner = web.AppRunner(plain)
    await runner.setup()
    try:
        assert plain.get(TLS) is None
    finally:
        await runner.cleanup()


async def test_serve_with_tls_answers_https_with_the_pinned_certificate(tmp_path: Path) -> None:
    data = tmp_path / "d"
    served = spawn_serve(data, env=cli_env(VRLMS_TLS="on"))
    proc = served.proc
    try:
        url = served.url
        assert url.startswith("https://127.0.0.1:"), url
        expected = ensure_certificate(data, "x", NOW).fingerprint
        # Pinning as a headset does it: no CA, compare the fingerprint.
        pin = aiohttp.Fingerprint(bytes.fromhex(expected))
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/api/health", ssl=pin) as resp:
                assert resp.status == 200
            # A different pin is refused.
            try:
                async with http.get(url + "/api/health", ssl=aiohttp.Fingerprint(b"\0" * 32)):
                    raise AssertionError("a wrong pin was accepted")
            except aiohttp.ServerFingerprintMismatch:
                pass
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
