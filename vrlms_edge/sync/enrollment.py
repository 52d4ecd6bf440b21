"""Enrolling this box with an org server: spend a one-time token to register the box's public
key, then remember the org and the server's URL (BoxIdentity).

IT can also drop a provisioning file, `enrollment.toml` with `url` and `token`, into the data
directory; the sync worker enrolls with it on start and renames it (`.done` / `.failed`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import delete, select

from vrlms_edge import __version__
from vrlms_edge.domain.managed import APPLYING_SYNC
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import BoxIdentity, Org, OutboxEntry
from vrlms_edge.sync import client
from vrlms_edge.sync.identity import b64, load_or_create_key, public_bytes
from vrlms_edge.sync.messages import EnrollRequest, OrgRef

PROVISIONING_FILE: Final = "enrollment.toml"


@dataclass(frozen=True, slots=True)
class Enrolled:
    box_id: str
    org_id: str
    url: str


async def enrolled(db: Database) -> Enrolled | None:
    """This box's enrollment, or None when it is not enrolled."""
    async with db.read() as s:
        row = (await s.execute(select(BoxIdentity).limit(1))).scalar_one_or_none()
    if row is None or row.org_id is None or row.org_server_url is None:
        return None
    return Enrolled(box_id=row.id, org_id=row.org_id, url=row.org_server_url)


async def enroll(
    db: Database, clock: ServerClock, data_dir: Path, url: str, token: str, *, ca_bundle: str = ""
) -> OrgRef:
    """Register with the org server at `url`. Raises client.OrgServerRefused/Unavailable."""
    key = load_or_create_key(data_dir)
    async with db.read() as s:
        ident = (await s.execute(select(BoxIdentity).limit(1))).scalar_one()
    answer = await client.enroll(
        url,
        EnrollRequest(
            token=token,
            box_id=ident.id,
            name=ident.name,
            public_key=b64(public_bytes(key)),
            version=__version__,
        ),
        ca_bundle=ca_bundle,
    )
    org = answer.org
    async with db.write() as s:
        s.info[APPLYING_SYNC] = True
        row = await s.get(BoxIdentity, ident.id)
        assert row is not None
        if await s.get(Org, org.id) is None:
            s.add(Org(id=org.id, slug=org.slug, name=org.name))
        row.org_id = org.id
        row.org_server_url = url.rstrip("/")
        row.public_key = public_bytes(key)
        row.enrolled_at = clock.now()
        # Rows queued for another org (before enrollment) can never be delivered.
        await s.execute(delete(OutboxEntry).where(OutboxEntry.org_id != org.id))
    return org


def read_provisioning(path: Path) -> tuple[str, str]:
    """(url, token) from a provisioning file. Raises ValueError."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    url, token = data.get("url"), data.get("token")
    if not isinstance(url, str) or not isinstance(token, str) or not url or not token:
        raise ValueError(f"{path}: needs string keys url and token")
    return url, token
