"""PIN and password hashing: scrypt with a per-secret salt (cryptography's Scrypt).

The stored form is `scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>` so parameters can be raised
later without breaking old hashes. Verification of an unknown account runs the same scrypt
against a dummy hash so timing does not reveal whether a nickname exists.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from typing import Final

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# n=2**14, r=8: ~16 MiB and ~40 ms per hash on the box: slow for guessing, fine for logins.
LOG2_N: Final = 14
R: Final = 8
P: Final = 1
LENGTH: Final = 32
PIN_RE: Final = re.compile(r"^[0-9]{4}$")
MIN_PASSWORD_LENGTH: Final = 10


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    kdf = Scrypt(salt=salt, length=LENGTH, n=2**LOG2_N, r=R, p=P)
    return f"scrypt${LOG2_N}${R}${P}${_b64(salt)}${_b64(kdf.derive(secret.encode()))}"


def verify_secret(secret: str, stored: str | None) -> bool:
    """True if `secret` matches `stored`; with no stored hash, burns the same time, False."""
    if not stored:
        verify_secret(secret, _DUMMY)
        return False
    try:
        _, log2_n, r, p, salt, digest = stored.split("$")
        kdf = Scrypt(salt=_unb64(salt), length=LENGTH, n=2 ** int(log2_n), r=int(r), p=int(p))
        kdf.verify(secret.encode(), _unb64(digest))
    except (InvalidKey, ValueError):
        return False
    return True


async def hash_secret_async(secret: str) -> str:
    return await asyncio.to_thread(hash_secret, secret)


async def verify_secret_async(secret: str, stored: str | None) -> bool:
    """Off the event loop: scrypt takes tens of milliseconds by design."""
    return await asyncio.to_thread(verify_secret, secret, stored)


def is_valid_pin(pin: str) -> bool:
    return bool(PIN_RE.match(pin))


_DUMMY: Final = hash_secret("dummy-secret-for-timing")
