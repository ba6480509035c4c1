"""Supervised reconnect for the broker transports (``amqp``, ``servicebus``).

What it is
    ``Backoff`` yields delays that grow exponentially up to a cap, with full jitter, so that a fleet
    of agents does not reconnect in step after a broker restart. ``Reconnector`` owns one
    connection's lifecycle: the first ``open()`` is the caller's (it fails fast), every later one runs
    in a background task after ``lost()`` is called, forever, logging each attempt with structlog
    (``event="reconnect attempt" / "reconnected" / "reconnect failed"``).

Connection URL / options
    None of its own: each transport passes ``backoff_initial`` / ``backoff_max`` (seconds) from its
    settings.

Guarantees
    At most one ``open()`` runs at a time; ``ready`` is set exactly while a connection is usable;
    ``wait_ready(timeout)`` lets a publisher ride out a reconnect instead of failing at once;
    ``aclose()`` stops the loop and never lets a late reconnect survive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator

import structlog

from transports.base import TransportBrokenError, TransportClosedError


class Backoff:
    """Delays ``initial * 2**n`` capped at ``maximum``, each drawn uniformly from [delay/2, delay]."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield random.uniform(delay / 2, delay)
            delay = min(delay * 2, self.maximum)


class Reconnector:
    """Re-opens a connection after each loss, with backoff and jitter, until closed."""

    def __init__(
        self,
        name: str,
        open_: Callable[[], Awaitable[None]],
        backoff: Backoff,
        recoverable: tuple[type[BaseException], ...],
    ) -> None:
        self.name = name
        self._open = open_
        self._backoff = backoff
        self._recoverable = recoverable
        self._log = structlog.get_logger("cloudprov.transport").bind(transport=name)
        self.ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0

    async def start(self) -> None:
        """Open the first connection (errors propagate: fail fast), then supervise it."""
        await self._open()
        self.ready.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.name}-reconnect")

    def lost(self, reason: object = None) -> None:
        """The connection broke: mark it unusable and let the supervisor reconnect."""
        if self._closed or not self.ready.is_set():
            return
        self.ready.clear()
        self._log.warning("connection lost", reason=str(reason) if reason else None)
        self._lost.set()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until a connection is usable; ``TransportBrokenError`` after ``timeout`` seconds."""
        if self._closed:
            raise TransportClosedError(f"{self.name} transport is closed")
        if self.ready.is_set():
            return
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            raise TransportBrokenError(f"{self.name}: not reconnected within {timeout:.1f}s") from None
        if self._closed:
            raise TransportClosedError(f"{self.name} transport is closed")

    async def _run(self) -> None:
        while not self._closed:
            await self._lost.wait()
            self._lost.clear()
            for attempt, delay in enumerate(self._backoff.delays(), start=1):
                if self._closed:
                    return
                self._log.info("reconnect attempt", attempt=attempt, delay=round(delay, 3))
                await asyncio.sleep(delay)
                if self._closed:
                    return
                try:
                    await self._open()
                except Exception as exc:  # after the first connect every failure is retried
                    level = self._log.warning if isinstance(exc, self._recoverable) else self._log.error
                    level("reconnect failed", attempt=attempt, error=f"{type(exc).__name__}: {exc}")
                    continue
                if self._closed:
                    return
                self.reconnects += 1
                self._lost.clear()
                self.ready.set()
                self._log.info("reconnected", attempt=attempt)
                break

    async def aclose(self) -> None:
        self._closed = True
        self.ready.set()  # release waiters: they see the closed flag
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
