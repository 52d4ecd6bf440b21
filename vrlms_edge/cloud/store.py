"""The org server's database handle: the box's Database, with sessions marked as the org
server's so the change feed records what they write."""

from __future__ import annotations

from vrlms_edge.cloud.changes import install_change_feed
from vrlms_edge.domain.managed import CLOUD_ROLE, ROLE_KEY
from vrlms_edge.store.db import Database


class OrgDatabase(Database):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        install_change_feed()
        for factory in (self._read_sessions, self._write_sessions):
            factory.configure(info={ROLE_KEY: CLOUD_ROLE})
