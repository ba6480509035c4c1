"""The LDAP connection pool's slots and reuse over fake clients: a bound on connections lent, handed on in
order, never lost (the lease takes a free slot without a coroutine; the rest goes through ``protocol.slots.Slots``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from plugins.directory import PoolExhaustedError, UnavailableError
from plugins.ldap.pool import ConnectionPool


class FakeConn:
    watched = True  # as a ReadableOnlyConnection whose socket the event loop watches

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self) -> None:
        self.made: list[FakeConn] = []
        self.fail = False

    async def connect(self, *, is_async: bool, timeout: float) -> FakeConn:
        if self.fail:
            raise OSError("refused")
        self.made.append(FakeConn(len(self.made)))
        return self.made[-1]


def pool_of(size: int, wait_timeout: float = 5.0) -> tuple[ConnectionPool, FakeClient]:
    client = FakeClient()
    clients: list[tuple[str, Any]] = [("ldap://fake", client)]
    pool = ConnectionPool(
        clients, size=size, connect_timeout=1, max_idle=60, failover_hold=0, wait_timeout=wait_timeout
    )
    return pool, client


async def test_at_most_size_connections_are_lent_and_waiters_go_in_order() -> None:
    """With every connection lent, leases wait; each one given back lets exactly the oldest waiter through,
    on the connection just given back."""
    pool, client = pool_of(2)
    order: list[tuple[int, int]] = []
    release = [asyncio.Event() for _ in range(5)]

    async def use(number: int) -> None:
        async with pool.connection() as conn:
            order.append((number, conn.number))
            await release[number].wait()

    tasks = [asyncio.create_task(use(n)) for n in range(5)]
    await asyncio.sleep(0.01)
    assert order == [(0, 0), (1, 1)]
    release[1].set()
    await asyncio.sleep(0.01)
    assert order == [(0, 0), (1, 1), (2, 1)]
    for event in release:
        event.set()
    await asyncio.gather(*tasks)
    assert [number for number, _ in order] == [0, 1, 2, 3, 4]
    assert len(client.made) == 2
    assert pool.idle == 2


async def test_cancelled_waiters_and_failed_connects_lose_no_slot() -> None:
    """A lease cancelled while waiting, one cancelled after being handed a slot, and one whose connect
    fails each leave the slot to the others: afterwards every slot can be taken again."""
    pool, client = pool_of(1)
    leases = [pool.connection() for _ in range(4)]
    await leases[0].__aenter__()
    gone = asyncio.create_task(leases[1].__aenter__())
    handed = asyncio.create_task(leases[2].__aenter__())
    last = asyncio.create_task(leases[3].__aenter__())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    await leases[0].__aexit__(None, None, None)  # the slot goes to ``handed`` ...
    handed.cancel()  # ... cancelled before it resumes: the slot goes on to ``last``
    await asyncio.gather(handed, return_exceptions=True)
    conn = await asyncio.wait_for(last, 1)
    assert conn is client.made[0]
    client.fail = True
    conn.close()
    await leases[3].__aexit__(None, None, None)  # given back closed: the next lease connects, and fails
    with pytest.raises(UnavailableError):
        async with pool.connection():
            pass
    client.fail = False
    async with pool.connection() as again:
        assert again is client.made[1]
    assert pool._slots.free == 1


async def test_a_stale_idle_connection_is_closed_not_lent() -> None:
    """An idle connection of an older generation (a failure since) is closed and a new one opened."""
    pool, client = pool_of(2)
    async with pool.connection() as first:
        pass

    async def lose_it() -> None:
        async with pool.connection() as broken:
            assert broken is first
            raise ConnectionError("lost")

    with pytest.raises(ConnectionError):
        await lose_it()
    assert first.closed
    async with pool.connection() as fresh:
        assert fresh is client.made[-1]
        assert fresh is not first


async def test_waiting_for_a_connection_is_bounded() -> None:
    """With every connection held (a paged search, a SCIM cursor), a lease waits at most ``wait_timeout``,
    then fails with ``PoolExhaustedError`` (an ``UnavailableError``: SCIM 503) and a logged warning; it
    takes no slot with it."""
    pool, _ = pool_of(1, wait_timeout=0.2)
    held = pool.connection()
    await held.__aenter__()
    started = time.monotonic()
    with (
        capture_logs() as logs,
        pytest.raises(PoolExhaustedError, match=r"no LDAP connection became free within 0\.2 s"),
    ):
        await asyncio.wait_for(pool.connection().__aenter__(), 5)
    assert 0.2 <= time.monotonic() - started < 2
    assert [(log["event"], log["log_level"], log["pool_size"]) for log in logs] == [
        ("ldap pool exhausted", "warning", 1)
    ]
    await held.__aexit__(None, None, None)
    async with pool.connection():
        assert pool._slots.free == 0
    assert pool._slots.free == 1
