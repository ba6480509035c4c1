"""A small pool of bonsai connections: one connection per concurrent operation.

Settings: ``pool_size``, ``connect_timeout``, ``max_idle``, ``failover_hold``, ``operation_timeout`` (the
longest wait for a free connection) and the URL list of ``LdapSettings``. Guarantees:
- at most ``pool_size`` connections exist; a caller waits (without spinning, in arrival order) for a
  free one, at most ``wait_timeout`` seconds: then ``PoolExhaustedError``, an ``UnavailableError`` the
  plugin does not retry (logged as ``ldap pool exhausted``). Paged searches keep their connection
  between pages (a SCIM cursor holds one until it is read to the end or expires): the bound keeps
  every other operation from waiting for them forever;
- a connection goes back to the pool only after an operation that ended with an LDAP result (even an
  error result); a lost connection, a timeout or a cancellation closes it, and every idle connection
  opened before that failure is dropped too (a restarted server broke them all);
- before reuse, an idle connection whose socket is readable (the server closed it or sent a notice of
  disconnection: the event loop notices it on a watched connection, a poll checks the others) or
  that idled longer than ``max_idle`` is closed;
- URLs are tried in order; one that failed to connect is skipped for ``failover_hold`` seconds unless
  all have failed. Errors leave as ``plugins.directory`` errors.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import bonsai
import structlog

from plugins.directory import PoolExhaustedError, UnavailableError
from plugins.ldap.errors import connection_is_reusable, translate
from protocol import deadlines
from protocol.slots import Slots

_log = structlog.get_logger("cloudprov.ldap")

#: An idle connection: (connection, generation, idle since, URL). A tuple: one is made per operation.
_Idle = tuple[Any, int, float, str]


class ConnectionPool:
    """Connections to the first reachable URL; use ``async with pool.connection() as conn``."""

    def __init__(
        self,
        clients: list[tuple[str, bonsai.LDAPClient]],
        *,
        size: int,
        connect_timeout: float,
        max_idle: float,
        failover_hold: float,
        wait_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clients = clients
        self._size = size
        self._slots = Slots(size)
        self._wait_timeout = wait_timeout
        self._idle: list[_Idle] = []
        self._busy: set[Any] = set()
        self._generation = 0
        self._failed_at: dict[str, float] = {}
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._failover_hold = failover_hold
        self._clock = clock
        self._closed = False
        self.opened = 0  #: connections opened so far (for tests and metrics)
        self.last_url: str | None = None

    @property
    def idle(self) -> int:
        return len(self._idle)

    def connection(self) -> _Lease:
        """A connection for one operation at a time (``async with``); broken ones never return to the pool."""
        return _Lease(self)

    async def _wait_for_slot(self) -> None:
        """Wait for a slot (every connection is lent) at most ``wait_timeout`` seconds."""
        try:
            with deadlines.running().within(self._wait_timeout):
                await self._slots.acquire()
        except TimeoutError:
            _log.warning(
                "ldap pool exhausted",
                pool_size=self._size,
                waited_seconds=self._wait_timeout,
                hint="every connection is in use (open paged searches, SCIM cursors, slow operations)",
            )
            raise PoolExhaustedError(
                f"no LDAP connection became free within {self._wait_timeout:g} s: all {self._size} pooled "
                "connections are in use (paged searches and SCIM cursors keep theirs); try again later, or "
                "raise pool_size"
            ) from None

    def _give_back(self, conn: Any, generation: int, url: str, error: BaseException | None) -> None:
        self._busy.discard(conn)
        reusable = error is None or connection_is_reusable(error)
        if not reusable:
            self._generation += 1  # the server may have restarted: distrust the idle ones
        if reusable and not self._closed and not conn.closed and generation == self._generation:
            self._idle.append((conn, generation, self._clock(), url))
        else:
            conn.close()

    def _take_idle(self) -> tuple[Any, int, str] | None:
        """The most recently used idle connection fit for reuse (closing the unfit ones); None: none."""
        idle = self._idle
        if idle:
            now = self._clock()
            while idle:
                conn, generation, since, url = idle.pop()
                if generation == self._generation and now - since < self._max_idle and _healthy(conn):
                    return conn, generation, url
                conn.close()
        return None

    async def _take_new(self) -> tuple[Any, int, str]:
        generation = self._generation
        conn, url = await self._connect()
        return conn, generation, url

    async def _connect(self) -> tuple[Any, str]:
        now = self._clock()
        fresh = [(u, c) for u, c in self._clients if now - self._failed_at.get(u, -1e18) >= self._failover_hold]
        candidates = fresh or self._clients
        errors: list[str] = []
        for url, client in candidates:
            try:
                conn = await client.connect(is_async=True, timeout=self._connect_timeout)
            except (bonsai.ConnectionError, bonsai.TimeoutError, TimeoutError, OSError) as exc:
                self._failed_at[url] = self._clock()
                errors.append(f"{url}: {translate(exc)}")
                continue
            except bonsai.LDAPError as exc:  # a bind refused is not a reason to fail over
                raise translate(exc, context=f"bind to {url}") from exc
            self._failed_at.pop(url, None)
            self.opened += 1
            self.last_url = url
            return conn, url
        raise UnavailableError("no LDAP server reachable: " + "; ".join(errors))

    async def close(self) -> None:
        """Close every idle connection; busy ones close when their operation ends."""
        self._closed = True
        while self._idle:
            self._idle.pop()[0].close()


class _Lease:
    """``async with pool.connection() as conn``: a slot and a connection, given back on exit.

    A class rather than a generator-based context manager: every operation takes one, and the
    generator's machinery cost as much as the rest of the pool's bookkeeping.
    """

    __slots__ = ("_conn", "_generation", "_pool", "_url")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    async def __aenter__(self) -> Any:
        pool = self._pool
        if pool._closed:
            raise UnavailableError("the LDAP connection pool is closed")
        slots = pool._slots
        if not slots.take():  # a free slot is taken without making a coroutine to await
            await pool._wait_for_slot()
        try:
            taken = pool._take_idle()
            if taken is None:
                taken = await pool._take_new()
        except BaseException:
            slots.release()
            raise
        self._conn, self._generation, self._url = taken
        pool._busy.add(self._conn)
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._pool._give_back(self._conn, self._generation, self._url, exc)
        finally:
            self._pool._slots.release()


def _healthy(conn: Any) -> bool:
    """An idle LDAP connection has nothing to read; a readable socket means EOF or a disconnect notice.
    A connection whose socket the event loop watches (``ReadableOnlyConnection.watched``) would have
    noticed that already: no system call then."""
    if getattr(conn, "watched", False):
        return not conn.closed
    fd = conn.fileno()
    if conn.closed or fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)
