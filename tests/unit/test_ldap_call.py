"""``LdapDirectory.call``: its first try (run in its own frame) and its retries (``_once``) translate errors
alike; reads retry recoverable failures, writes that failed in flight do not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import bonsai
import pytest

from plugins.directory import NoSuchObjectError, UnavailableError
from plugins.ldap import LdapDirectory, LdapSettings
from plugins.ldap.pool import ConnectionPool


class OneConnectionPool(ConnectionPool):
    """A pool that always lends the same (fake) connection."""

    def __init__(self) -> None:
        super().__init__([], size=1, connect_timeout=1, max_idle=1, failover_hold=0)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        yield object()


def _directory(tmp_path: Path) -> LdapDirectory:
    settings = LdapSettings(
        auth="anonymous",
        flavor="openldap",
        state_dir=tmp_path,
        retry={"attempts": 3, "initial_backoff": 0, "max_backoff": 0, "jitter": 0},
    )
    directory = LdapDirectory(settings)
    directory._pool = OneConnectionPool()
    return directory


def failing(*errors: BaseException) -> Any:
    """An operation raising ``errors`` one per try, then returning how many tries it took."""
    tries: list[int] = []

    async def op(conn: Any) -> int:
        tries.append(1)
        if len(tries) <= len(errors):
            raise errors[len(tries) - 1]
        return len(tries)

    return op


async def test_first_try_and_retries_translate_alike(tmp_path: Path) -> None:
    """A result code fails the first try and a retry with the same error and message."""
    directory = _directory(tmp_path)
    missing = bonsai.NoSuchObjectError("no such object")
    with pytest.raises(NoSuchObjectError) as first:
        await directory.call("read 'x'", failing(missing))
    with pytest.raises(NoSuchObjectError) as retried:
        await directory.call("read 'x'", failing(OSError("lost"), missing))
    assert str(first.value) == str(retried.value)
    assert str(first.value).startswith("read 'x': ")
    assert first.value.__cause__ is missing


async def test_reads_retry_recoverable_failures_and_writes_in_flight_do_not(tmp_path: Path) -> None:
    """A lost connection is retried for a read; a write that failed in flight raises UnavailableError once."""
    directory = _directory(tmp_path)
    assert await directory.call("read", failing(OSError("lost"), OSError("lost"))) == 3
    with pytest.raises(UnavailableError, match="write: server unreachable"):
        await directory.call("write", failing(OSError("lost")), write=True)
