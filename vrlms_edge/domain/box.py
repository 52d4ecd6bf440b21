"""This box's identity: a stable id made on first start and a human name."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from vrlms_edge.store.db import Database
from vrlms_edge.store.models import BoxIdentity


@dataclass(slots=True)
class BoxInfo:
    id: str
    # The name as configured; `advertised_name` is what mDNS settled on after conflicts.
    name: str
    advertised_name: str


async def ensure_box_identity(db: Database, name: str) -> BoxInfo:
    async with db.write() as s:
        row = (await s.execute(select(BoxIdentity).limit(1))).scalar_one_or_none()
        if row is None:
            row = BoxIdentity(name=name)
            s.add(row)
            await s.flush()
        elif row.name != name:
            row.name = name
        return BoxInfo(id=row.id, name=row.name, advertised_name=row.name)
