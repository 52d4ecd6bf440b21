"""Schema pieces every API module shares: ids and the `?limit=&cursor=` of lists."""

from __future__ import annotations

from typing import Annotated

import msgspec

from vrlms_edge.domain.paging import DEFAULT_LIMIT, MAX_LIMIT

# Ids are UUID strings; anything else simply is not found (404), never an error of its own.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str, msgspec.Meta(max_length=512)]


class PageQuery(msgspec.Struct, kw_only=True):
    """`?limit=&cursor=`: pass a list's `next_cursor` as `cursor` for the next page."""

    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None


class UserIds(msgspec.Struct, kw_only=True):
    user_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=500)]
