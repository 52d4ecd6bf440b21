"""Advertise the box over mDNS for as long as the app runs (a cleanup_ctx entry).

One AsyncZeroconf per box. A background task polls the interface addresses and, when they
change (DHCP renew, cable moved, Wi-Fi back), moves zeroconf's sockets and re-announces the
service with the new addresses. Shutdown sends goodbye packets so headsets drop the box at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web
from sqlalchemy import select
from zeroconf.asyncio import AsyncZeroconf

from vrlms_edge.config import Settings
from vrlms_edge.discovery.interfaces import (
    InterfaceChoice,
    confine_to_joined_groups,
    current_interfaces,
)
from vrlms_edge.discovery.service import BoxAdvert
from vrlms_edge.domain.box import BoxInfo
from vrlms_edge.keys import BOX, DB, SETTINGS, TLS
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Org

log = logging.getLogger(__name__)

# How often the interface addresses are read: a change is re-announced within about this long
# plus one announcement; reading them costs one getifaddrs() call.
POLL_INTERVAL_S: Final = 2.0


async def single_org_slug(db: Database) -> str | None:
    """The org slug when the box serves exactly one org (TXT `org`), else None."""
    async with db.read() as s:
        slugs = (
            (await s.execute(select(Org.slug).where(Org.deleted_at.is_(None)).limit(2)))
            .scalars()
            .all()
        )
    return slugs[0] if len(slugs) == 1 else None


class Advertiser:
    """Keeps the box's service registered on the current addresses of the chosen interfaces."""

    def __init__(
        self, settings: Settings, box: BoxInfo, db: Database, fingerprint: str | None
    ) -> None:
        self._settings = settings
        self._box = box
        self._db = db
        self._fingerprint = fingerprint
        self._zc: AsyncZeroconf | None = None
        self._advert: BoxAdvert | None = None
        self._applied: InterfaceChoice | None = None

    async def run(self) -> None:
        """Poll forever; each change of the chosen addresses is applied once."""
        while True:
            choice = current_interfaces(self._settings.mdns_interfaces)
            if choice != self._applied:
                try:
                    await self._apply(choice)
                    self._applied = choice
                except Exception:  # keep advertising attempts alive; retried on the next poll
                    log.exception("mDNS: could not advertise on %s", choice.addresses)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _apply(self, choice: InterfaceChoice) -> None:
        if choice.empty:
            # No usable address (cable out, Wi-Fi down): nothing can be sent; start over once
            # addresses are back so probing and announcing run again.
            log.warning("mDNS: no usable interface address; waiting for one")
            await self.close()
            return
        advert = BoxAdvert(
            box_id=self._box.id,
            name=self._box.name,
            port=self._settings.port,
            addresses=choice.addresses,
            tls=self._settings.tls,
            fingerprint=self._fingerprint,
            org_slug=await single_org_slug(self._db),
        )
        if self._zc is None or self._advert is None:
            self._zc = AsyncZeroconf(interfaces=list(choice.sockets), ip_version=choice.ip_version)
            await confine_to_joined_groups(self._zc.zeroconf)
            info = advert.to_service_info()
            # allow_name_change: a second "Room 12" on the network becomes "Room 12-2".
            announced = await self._zc.async_register_service(info, allow_name_change=True)
            # Probing is over, so the name is final: show it before the announcements go out.
            self._advert = dataclasses.replace(advert, instance=BoxAdvert.settled_instance(info))
            self._box.advertised_name = self._advert.instance_name
            await announced
            log.info("mDNS: advertising %r on %s", self._advert.instance_name, choice.addresses)
        else:
            self._advert = dataclasses.replace(advert, instance=self._advert.instance_name)
            # Service first, sockets second: a new socket re-announces the registered service at
            # once, and it must carry the new addresses. An announcement of the old ones would
            # refresh them in every client's cache instead of letting the cache-flush drop them.
            announced = await self._zc.async_update_service(self._advert.to_service_info())
            await self._zc.async_update_interfaces(list(choice.sockets), choice.ip_version)
            await confine_to_joined_groups(self._zc.zeroconf)
            await announced
            log.info("mDNS: re-announced %r on %s", self._advert.instance_name, choice.addresses)
        self._box.advertised_name = self._advert.instance_name

    async def close(self) -> None:
        """Goodbye packets for the service, then close the sockets."""
        zc, self._zc, self._advert, self._applied = self._zc, None, None, None
        if zc is not None:
            await zc.async_close()


async def mdns_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx entry (after the database): advertise while the app runs."""
    settings = app[SETTINGS]
    if settings.port == 0:
        # The real port is only known once the site is bound, after start-up; advertising
        # port 0 would send every headset nowhere.
        log.warning("mDNS: not advertising, the box listens on an ephemeral port (port=0)")
        yield
        return
    tls = app.get(TLS)
    advertiser = Advertiser(settings, app[BOX], app[DB], tls.fingerprint if tls else None)
    task = asyncio.create_task(advertiser.run(), name="mdns-advertiser")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await advertiser.close()
