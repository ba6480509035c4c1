"""The PostgreSQL store driver (``asyncpg``; ``pip install 'cloudprov[postgres]'``), for replicas.

Connection URL
    ``postgresql://user:password@host:5432/database`` (``postgres://`` too; libpq query options
    such as ``sslmode`` are passed on to asyncpg).

Guarantees
    A small connection pool (``min_size`` 1, ``max_size`` 10). Migrations run while holding a
    session advisory lock, so replicas starting together apply each migration once and the others
    wait for it. ``_lock(name)`` is a transaction-scoped advisory lock keyed by ``name``: key
    rotation and settings writes are serialised across every replica sharing the database.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from service.store.base import Store, Tx

#: asyncpg ships no type information; imported here so a missing extra fails only this driver.
asyncpg: Any = importlib.import_module("asyncpg")

MIGRATION_LOCK = "cloudprov.control.migrations"


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class _PgTx:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        rows = await self._connection.fetch(sql, *args)
        return [dict(row) for row in rows]

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._connection.execute(sql, *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0


class PostgresStore(Store):
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self._pool: Any = None
        self._sizes = (min_size, max_size)

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.url, min_size=self._sizes[0], max_size=self._sizes[1])
        async with self._pool.acquire() as connection:
            await connection.execute("SELECT pg_advisory_lock($1)", lock_key(MIGRATION_LOCK))
            try:
                self._migration_connection = connection
                await self._migrate(time.time())
            finally:
                self._migration_connection = None
                await connection.execute("SELECT pg_advisory_unlock($1)", lock_key(MIGRATION_LOCK))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    _migration_connection: Any = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open")
        if self._migration_connection is not None:  # migrations run on the connection holding the lock
            async with self._migration_connection.transaction():
                yield _PgTx(self._migration_connection)
            return
        async with self._pool.acquire() as connection, connection.transaction():
            yield _PgTx(connection)

    async def _lock(self, tx: Tx, name: str) -> None:
        await tx.execute("SELECT pg_advisory_xact_lock($1)", lock_key(name))
