"""The SQLite store driver (the embedded default): stdlib ``sqlite3`` run in a worker thread.

Connection URL
    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or ``sqlite://:memory:``.

Guarantees
    One connection per store, used by one thread at a time (an asyncio lock around
    ``asyncio.to_thread``); WAL journal, foreign keys on, ``busy_timeout`` 10 s. Every transaction
    starts with ``BEGIN IMMEDIATE``: writers are serialised, also across processes sharing the file,
    which is what makes the store-wide locks of ``Store._lock`` a no-op here. Migrations run in one
    such transaction each. Where SQLite answers "locked" without waiting (several processes opening
    a new file at once), the step is retried, bounded. The database holds signing keys and broker
    credentials: a folder this driver creates is 0700, and the database file with its ``-wal``,
    ``-shm`` and ``-journal`` files is 0600 (created so, or tightened when found wider), whatever the umask.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from service.store.base import Store, Tx

T = TypeVar("T")

_PARAM = re.compile(r"\$(\d+)")
#: Tries of a step SQLite may refuse with "database is locked" without waiting (first opens switching to WAL).
LOCKED_TRIES = 200
#: The files SQLite keeps next to a database (its mode is theirs when SQLite creates them).
SIDE_FILES = ("-wal", "-shm", "-journal")


def _retry_locked(step: Callable[[], T]) -> T:
    """Run ``step``, again after a short sleep while SQLite says the database is locked (bounded)."""
    for _ in range(LOCKED_TRIES - 1):
        try:
            return step()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            time.sleep(0.01)
    return step()


def private_database(path: Path) -> None:
    """Create ``path``'s folder 0700 when missing and the database file 0600; tighten its files found wider."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # mkdir's mode is masked by the umask, which may take the owner's bits too
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path.name, *(path.name + side for side in SIDE_FILES)):
        try:
            mode = stat.S_IMODE((path.parent / name).stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path.parent / name, 0o600)


def sqlite_path(url: str) -> str:
    """``sqlite:///state/control.db`` → ``state/control.db`` (``:memory:`` kept as is)."""
    rest = url.removeprefix("sqlite://")
    if rest in {":memory:", "/:memory:"}:
        return ":memory:"
    if not rest.startswith("/"):
        raise ValueError(f"{url!r}: expected sqlite:///relative/path or sqlite:////absolute/path")
    return rest[1:]


class _SqliteTx:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def _run(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        return self._connection.execute(_PARAM.sub(r"?\1", sql), args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            cursor = self._run(sql, args)
            names = [c[0] for c in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return await asyncio.to_thread(run)

    async def execute(self, sql: str, *args: Any) -> int:
        return await asyncio.to_thread(lambda: self._run(sql, args).rowcount)


class SqliteStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._connection: sqlite3.Connection | None = None
        self._lock_ = asyncio.Lock()

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            if self.path not in {":memory:", ""}:
                private_database(Path(self.path))
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA busy_timeout = 10000")
            connection.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                _retry_locked(lambda: connection.execute("PRAGMA journal_mode = WAL"))
            return connection

        self._connection = await asyncio.to_thread(connect)
        await self._migrate(time.time())

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            async with self._lock_:
                await asyncio.to_thread(connection.close)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        connection = self._connection
        if connection is None:
            raise RuntimeError("the SQLite store is not open")
        async with self._lock_:
            await asyncio.to_thread(_retry_locked, lambda: connection.execute("BEGIN IMMEDIATE"))
            try:
                yield _SqliteTx(connection)
            except BaseException:
                await asyncio.shield(asyncio.to_thread(connection.execute, "ROLLBACK"))
                raise
            await asyncio.to_thread(connection.execute, "COMMIT")

    async def _lock(self, tx: Tx, name: str) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the database's single write lock."""
