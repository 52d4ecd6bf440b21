"""Keyset pagination for every list the API answers (`?limit=&cursor=`).

A cursor is the opaque, URL-safe encoding of the sort key of the last row of a page; the next
page starts strictly after it, so rows added or removed meanwhile never shift a page (as an
OFFSET would).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar

import msgspec
from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from vrlms_edge.errors import AppError
from vrlms_edge.store.models import UTCDateTime

T = TypeVar("T")
# A sort key: a mapped column or a SQL expression over columns.
KeyColumn = ColumnElement[Any] | InstrumentedAttribute[Any]

# A page big enough for a whole class roster, small enough to answer fast on the box.
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 500

Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str, msgspec.Meta(max_length=512)]


class PageQuery(msgspec.Struct, kw_only=True):
    """`?limit=&cursor=` of every list endpoint."""

    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None


def _bad_cursor() -> AppError:
    return AppError(
        422, "validation_error", "cursor is not one this server issued", detail={"path": "cursor"}
    )


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(msgspec.json.encode(plain)).decode().rstrip("=")


def decode_cursor(cursor: str, keys: Sequence[KeyColumn]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = msgspec.json.decode(raw, type=list[str | int | None])
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise _bad_cursor() from exc
    if len(values) != len(keys):
        raise _bad_cursor()
    out: list[Any] = []
    for key, value in zip(keys, values, strict=True):
        if isinstance(getattr(key, "type", None), UTCDateTime):
            if not isinstance(value, str):
                raise _bad_cursor()
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError as exc:
                raise _bad_cursor() from exc
            if parsed.tzinfo is None:
                raise _bad_cursor()
            out.append(parsed)
        else:
            out.append(value)
    return out


async def keyset_page(
    s: AsyncSession,
    stmt: Select[T],
    keys: Sequence[KeyColumn],
    key_of: Callable[[T], Sequence[Any]],
    page: PageQuery,
) -> tuple[list[T], str | None]:
    """One page of `stmt` ordered by `keys` (ascending, non-null, unique together)."""
    if page.cursor:
        stmt = stmt.where(tuple_(*keys) > tuple_(*decode_cursor(page.cursor, keys)))
    rows = list((await s.execute(stmt.order_by(*keys).limit(page.limit + 1))).scalars())
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    return rows, encode_cursor(key_of(rows[-1]))
