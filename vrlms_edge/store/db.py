"""The database handle: async engine, SQLite pragmas, read sessions and serialized writes.

SQLite allows one writer at a time. Writers in this process queue on an asyncio lock and use
a dedicated connection whose transactions open with BEGIN IMMEDIATE, so a write never fails
with "database is locked"; other processes (a CLI backup, say) are waited for through
busy_timeout. On PostgreSQL, writes run concurrently and the database arbitrates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

BUSY_TIMEOUT_MS: Final = 30_000


class Database:
    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL") -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = create_async_engine(url, pool_size=8, max_overflow=8)
            self.write_engine = create_async_engine(url, pool_size=1, max_overflow=0)
            _install_sqlite_pragmas(self.engine, sqlite_synchronous, begin="BEGIN")
            _install_sqlite_pragmas(self.write_engine, sqlite_synchronous, begin="BEGIN IMMEDIATE")
        else:
            self.engine = create_async_engine(
                url, pool_size=10, max_overflow=20, pool_pre_ping=True
            )
            self.write_engine = self.engine
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads (its own snapshot; nothing is committed)."""
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block ends, rolled back on error."""
        if not self.is_sqlite:
            async with self._write_sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, self._write_sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


def _install_sqlite_pragmas(engine: AsyncEngine, synchronous: str, *, begin: str) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the driver so that BEGIN IMMEDIATE is ours to issue.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)
