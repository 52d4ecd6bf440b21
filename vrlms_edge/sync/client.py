"""HTTP client of the org server: enrollment, and signed pull/push requests.

Failures come out as two kinds: `OrgServerUnavailable` (no connection, timeout, 5xx, an answer
cut short: try again later) and `OrgServerRefused` (a 4xx: the request itself is wrong; the
code says why). TLS is verified against the system roots, or against `ca_bundle` when set.
"""

from __future__ import annotations

import ssl
from typing import Any, Final, TypeVar

import aiohttp
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yarl import URL

from vrlms_edge.live.clock import ServerClock
from vrlms_edge.sync import signing
from vrlms_edge.sync.messages import (
    EnrollAnswer,
    EnrollRequest,
    PullAnswer,
    PushAnswer,
    PushRequest,
)

T = TypeVar("T")

# A page is at most a few hundred KB: a minute covers a slow uplink; past it we retry.
REQUEST_TIMEOUT_S: Final = 60.0
CONNECT_TIMEOUT_S: Final = 10.0


class OrgServerUnavailable(Exception):
    """The org server could not be reached or failed; try again later."""


class OrgServerRefused(Exception):
    """The org server answered 4xx."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


def ssl_context(ca_bundle: str) -> ssl.SSLContext:
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    return ssl.create_default_context()


def _session(base_url: str, ca_bundle: str) -> aiohttp.ClientSession:
    # Loading the CA store costs a few hundred ms: only when the server speaks TLS.
    tls = URL(base_url).scheme == "https"
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S),
        connector=aiohttp.TCPConnector(ssl=ssl_context(ca_bundle) if tls else False),
    )


async def _send(
    http: aiohttp.ClientSession,
    method: str,
    url: URL,
    body: bytes | None,
    headers: dict[str, str],
    answer: type[T],
) -> T:
    try:
        async with http.request(method, url, data=body, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise OrgServerUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if status >= 500 or status in (408, 429):
        raise OrgServerUnavailable(f"org server answered {status}")
    if status >= 400:
        code, message = "http_error", raw[:200].decode(errors="replace")
        try:
            err = msgspec.json.decode(raw)["error"]
            code, message = str(err["code"]), str(err["message"])
        except (msgspec.DecodeError, KeyError, TypeError):
            pass
        raise OrgServerRefused(status, code, message)
    try:
        return msgspec.json.decode(raw, type=answer)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # A body cut short by a broken link lands here: not the server's final word.
        raise OrgServerUnavailable(f"unreadable answer: {exc}") from exc


def endpoint(base_url: str, path: str) -> URL:
    base = URL(base_url)
    return base.with_path(base.path.rstrip("/") + path)


async def enroll(base_url: str, req: EnrollRequest, *, ca_bundle: str = "") -> EnrollAnswer:
    async with _session(base_url, ca_bundle) as http:
        return await _send(
            http,
            "POST",
            endpoint(base_url, "/api/sync/enroll"),
            msgspec.json.encode(req),
            {"Content-Type": "application/json"},
            EnrollAnswer,
        )


class OrgServerClient:
    """Signed requests of one enrolled box."""

    def __init__(
        self,
        base_url: str,
        box_id: str,
        key: Ed25519PrivateKey,
        clock: ServerClock,
        *,
        ca_bundle: str = "",
    ) -> None:
        self.base_url = base_url
        self.box_id = box_id
        self._key = key
        self._clock = clock
        self._http = _session(base_url, ca_bundle)

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> OrgServerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _signed(self, method: str, url: URL, body: bytes | None, answer: type[T]) -> T:
        headers = signing.sign(
            self._key, self.box_id, method, url.raw_path_qs, body or b"", self._clock.now_ms()
        )
        if body is not None:
            headers["Content-Type"] = "application/json"
        return await _send(self._http, method, url, body, headers, answer)

    async def pull(self, cursor: int, limit: int, *, org: str | None = None) -> PullAnswer:
        query: dict[str, Any] = {"cursor": cursor, "limit": limit}
        if org is not None:
            query["org"] = org
        url = endpoint(self.base_url, "/api/sync/pull").with_query(query)
        return await self._signed("GET", url, None, PullAnswer)

    async def push(self, req: PushRequest) -> PushAnswer:
        url = endpoint(self.base_url, "/api/sync/push")
        return await self._signed("POST", url, msgspec.json.encode(req), PushAnswer)
