"""``Slots``: at most n holders at once, ``asyncio.Semaphore``'s job for a hot path, cheaper.

What it is
    The dispatcher bounds deliveries in flight and the LDAP pool bounds operations holding a connection,
    once per request each. ``asyncio.Semaphore.acquire`` is a coroutine that scans its waiters on every
    call; here the common case (a slot is free) is ``take()``, a plain call, and only a caller that
    must wait makes a coroutine (``acquire``). This module sits in ``protocol`` beside ``deadlines``
    for the same reason: it is the one package the agent and the directory plugins may both import.

Settings
    None (the size is the caller's).

Guarantees
    * ``take()`` takes a free slot and says so, or says there is none, without waiting.
    * ``await acquire()`` waits for a slot; a released slot passes straight to the oldest waiter (so
      ``free`` stays 0 while anyone waits), a waiter cancelled while waiting takes none, and one
      cancelled just after being handed a slot passes it on.
    * ``release()`` gives a slot back: to the oldest waiter, or to the free count.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    __slots__ = ("_waiters", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """Take a free slot if there is one, without waiting."""
        if self.free > 0:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.free > 0:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)  # a waiter cancelled meanwhile is skipped by ``release``
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot just before the cancel: pass it on
                self.release()
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1
