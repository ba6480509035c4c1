"""``LdapDirectory.call``: its first try (run in its own frame) and its retries (``_once``) translate errors
alike; reads retry recoverable failures, writes that failed in flight do not (their outcome is unknown)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import bonsai
import pytest

from plugins.directory import NoSuchObjectError, UnavailableError, WriteOutcomeUnknownError
from plugins.ldap import LdapDirectory, LdapSettings
from plugins.ldap.pool import ConnectionPool


class OneConnectionPool(ConnectionPool):
    """A pool that always lends the same (fake) connection."""

    def __init__(self) -> None:
        super().__init__([], size=1, connect_timeout=1, max_idle=1, failover_hold=0, wait_timeout=1)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        yield object()


class UnreachableFirst(OneConnectionPool):
    """A pool whose first ``failures`` leases fail to connect (the request is never sent)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        if self.failures:
            self.failures -= 1
            raise UnavailableError("no LDAP server reachable: ldap://fake: refused")
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
    """A lost connection is retried for a read; a write lost in flight, or not answered in time, raises
    ``WriteOutcomeUnknownError`` (not an ``UnavailableError``, which callers retry) after one try."""
    directory = _directory(tmp_path)
    assert await directory.call("read", failing(OSError("lost"), OSError("lost"))) == 3
    for in_flight in (OSError("lost"), TimeoutError(), bonsai.ConnectionError("Can't contact LDAP server.")):
        op = failing(in_flight)
        with pytest.raises(WriteOutcomeUnknownError, match=r"^write: .*may or may not have applied") as raised:
            await directory.call("write", op, write=True)
        assert not isinstance(raised.value, UnavailableError)
        assert raised.value.__cause__ is in_flight
        assert await op(None) == 2  # the op ran once: this call is its second


async def test_writes_the_server_cannot_have_applied_are_retried(tmp_path: Path) -> None:
    """A write whose connection could not be opened, or that the server answered busy, is retried."""
    directory = _directory(tmp_path)
    directory._pool = UnreachableFirst(failures=2)
    assert await directory.call("write", failing(), write=True) == 1
    busy = type("Busy", (bonsai.LDAPError,), {"code": 51})("busy")
    assert await directory.call("write", failing(busy, busy), write=True) == 3
