"""The sync wire format (JSON bodies between box and org server), one struct per message."""

from __future__ import annotations

from typing import Any

import msgspec


class OrgRef(msgspec.Struct, kw_only=True):
    id: str
    slug: str
    name: str


class EnrollRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: str
    box_id: str
    name: str
    # Raw 32-byte Ed25519 public key, base64url.
    public_key: str
    version: str = ""


class EnrollAnswer(msgspec.Struct, kw_only=True):
    box_id: str
    org: OrgRef


class PulledItem(msgspec.Struct, kw_only=True):
    entity: str
    id: str
    # The row as it is now; null when the row no longer exists (a hard delete).
    data: dict[str, Any] | None


class PullAnswer(msgspec.Struct, kw_only=True):
    org_id: str
    cursor: int
    more: bool
    items: list[PulledItem]


class PushItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    entity: str
    id: str
    version: int
    data: dict[str, Any]


class BoxReport(msgspec.Struct, kw_only=True):
    version: str = ""
    health: dict[str, Any] = {}


class PushRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    items: list[PushItem]
    box: BoxReport | None = None


class Held(msgspec.Struct, kw_only=True):
    entity: str
    id: str
    version: int


class ItemRef(msgspec.Struct, kw_only=True):
    entity: str
    id: str


class Missing(msgspec.Struct, kw_only=True):
    """An item not stored because a row it refers to is not on the org server yet."""

    entity: str
    id: str
    needs: ItemRef


class PushAnswer(msgspec.Struct, kw_only=True):
    held: list[Held]
    missing: list[Missing]
