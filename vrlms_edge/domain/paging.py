"""Cursor pagination for list functions: limits and opaque cursors (`?limit=&cursor=`).

A cursor is the sort key of the last item of a page, base64url-encoded JSON, so the next page
starts strictly after it (keyset pagination: stable while rows are added or removed).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

import msgspec

from vrlms_edge.errors import AppError

# A page big enough for a whole class (30 headsets) plus staff in one request.
DEFAULT_LIMIT: Final = 100
# Bounds the work and the answer size of one request.
MAX_LIMIT: Final = 500


def clamp_limit(limit: int | None) -> int:
    """The page size to use; out-of-range values are refused rather than silently changed."""
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise AppError(
            422, "validation_error", f"limit must be 1..{MAX_LIMIT}", detail={"path": "$.limit"}
        )
    return limit


def encode_cursor(*key: str | int) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[str | int] | None:
    """The sort key in `cursor` (a list of `size` strings/ints), None for the first page."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = msgspec.json.decode(raw, type=list[str | int])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        key = []
    if len(key) != size:
        raise AppError(422, "bad_cursor", "cursor is not one this list handed out")
    return key
