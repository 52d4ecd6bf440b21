"""Who is calling a sync endpoint: a known box, proven by a fresh, unreplayed signature.

Checks, in order: the four headers are there; the timestamp is within the window of the
org server's clock; the box is enrolled; the Ed25519 signature covers this method, path,
query, timestamp, nonce and body; the nonce was not seen before (SyncNonce, kept for two
windows and pruned per box as it goes). Every refusal is a 401 with its own code.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from vrlms_edge.errors import AppError
from vrlms_edge.live.clock import ServerClock
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Box, SyncNonce
from vrlms_edge.sync import signing


def _refuse(code: str, message: str) -> AppError:
    return AppError(401, code, message)


async def authenticate_box(
    db: Database,
    clock: ServerClock,
    method: str,
    path_qs: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Box:
    box_id = headers.get(signing.BOX_HEADER, "")
    stamp = headers.get(signing.TIMESTAMP_HEADER, "")
    nonce = headers.get(signing.NONCE_HEADER, "")
    signature = headers.get(signing.SIGNATURE_HEADER, "")
    if not (box_id and stamp and nonce and signature):
        raise _refuse("unsigned_request", "sync requests must be signed by an enrolled box")
    if len(box_id) > 36 or not 8 <= len(nonce) <= 64 or len(signature) > 200:
        raise _refuse("bad_signature", "malformed signature headers")
    try:
        timestamp_ms = int(stamp)
    except ValueError:
        raise _refuse("stale_request", "timestamp is not an integer") from None
    now_ms = clock.now_ms()
    if abs(now_ms - timestamp_ms) > signing.WINDOW_MS:
        raise _refuse("stale_request", "timestamp outside the accepted window")
    async with db.read() as s:
        box = await s.get(Box, box_id)
    if box is None or box.deleted_at is not None:
        raise _refuse("unknown_box", "this box is not enrolled")
    if not signing.verify(
        box.public_key, signature, method, path_qs, box_id, timestamp_ms, nonce, body
    ):
        raise _refuse("bad_signature", "signature does not match the request")
    await _spend_nonce(db, clock, box_id, nonce)
    return box


async def _spend_nonce(db: Database, clock: ServerClock, box_id: str, nonce: str) -> None:
    now = clock.now()
    dialect = postgresql if not db.is_sqlite else sqlite
    stmt = (
        dialect.insert(SyncNonce)
        .values(box_id=box_id, nonce=nonce, seen_at=now)
        .on_conflict_do_nothing()
        .returning(SyncNonce.nonce)
    )
    async with db.write() as s:
        stored = (await s.execute(stmt)).scalar_one_or_none()
        if stored is None:
            raise _refuse("replayed_request", "this request was already received")
        # A nonce older than two windows can no longer pass the timestamp check.
        cutoff = now - timedelta(milliseconds=2 * signing.WINDOW_MS)
        await s.execute(
            delete(SyncNonce).where(SyncNonce.box_id == box_id, SyncNonce.seen_at < cutoff)
        )


async def box_by_id(db: Database, box_id: str) -> Box | None:
    async with db.read() as s:
        return (await s.execute(select(Box).where(Box.id == box_id))).scalar_one_or_none()
