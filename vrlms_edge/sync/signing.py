"""Request signatures between box and org server.

The box signs a canonical text of: protocol tag, HTTP method, path with query string, its
box id, a millisecond timestamp, a random nonce and the SHA-256 of the body. The org server
rebuilds the same text from what it received, so changing any of them (a cursor in the query,
a byte of the body, the timestamp) breaks the signature; the timestamp window and the nonce
cache (org server side) stop replays.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vrlms_edge.sync.identity import b64, unb64

BOX_HEADER: Final = "X-Vrlms-Box"
TIMESTAMP_HEADER: Final = "X-Vrlms-Timestamp"
NONCE_HEADER: Final = "X-Vrlms-Nonce"
SIGNATURE_HEADER: Final = "X-Vrlms-Signature"
SCHEME: Final = "vrlms-sync-v1"
# How far a request's timestamp may be from the org server's clock: wide enough for a box
# whose clock drifted a little, narrow enough that a captured request soon goes stale.
WINDOW_MS: Final = 300_000


def canonical(
    method: str, path_qs: str, box_id: str, timestamp_ms: int, nonce: str, body: bytes
) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(
        [SCHEME, method.upper(), path_qs, box_id, str(timestamp_ms), nonce, digest]
    ).encode()


def sign(
    key: Ed25519PrivateKey, box_id: str, method: str, path_qs: str, body: bytes, now_ms: int
) -> dict[str, str]:
    """The headers that authenticate one request."""
    nonce = secrets.token_urlsafe(18)
    signature = key.sign(canonical(method, path_qs, box_id, now_ms, nonce, body))
    return {
        BOX_HEADER: box_id,
        TIMESTAMP_HEADER: str(now_ms),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: b64(signature),
    }


def verify(
    public_key: bytes,
    signature: str,
    method: str,
    path_qs: str,
    box_id: str,
    timestamp_ms: int,
    nonce: str,
    body: bytes,
) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            unb64(signature), canonical(method, path_qs, box_id, timestamp_ms, nonce, body)
        )
    except (InvalidSignature, ValueError):
        return False
    return True
