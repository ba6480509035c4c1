"""``Deadlines``: operation timeouts grouped in short slots, one event-loop timer per slot in use.

Settings: none (``GRAIN``: slot length, 50 ms). Guarantees:
- ``start(done, timeout)`` fails the future ``done`` with the builtin ``TimeoutError`` once
  ``timeout`` seconds have passed, never earlier, at most ``GRAIN`` later (plus event-loop lag);
  ``cancel`` takes it back (call it however the operation ended);
- one timer per slot instead of one per operation: an asyncio timer handle (a Python object pushed
  into and popped from the loop's heap with Python-level comparisons, cancelled one by one) cost
  ~5 us of a ~170 us one-entry lookup; a slot costs a set insertion and removal;
- one ``Deadlines`` per event loop (``for_loop``), shared by every connection on it.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

GRAIN = 0.05

_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = weakref.WeakKeyDictionary()


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, set[asyncio.Future[Any]]] = {}

    def start(self, done: asyncio.Future[Any], timeout: float) -> int:
        """Fail ``done`` with ``TimeoutError`` after ``timeout`` seconds; returns the key for ``cancel``."""
        slot = int((self._loop.time() + timeout) / GRAIN) + 1
        waiting = self._slots.get(slot)
        if waiting is None:
            waiting = self._slots[slot] = set()
            self._loop.call_at(slot * GRAIN, self._expire, slot)
        waiting.add(done)
        return slot

    def cancel(self, done: asyncio.Future[Any], slot: int) -> None:
        waiting = self._slots.get(slot)
        if waiting is not None:
            waiting.discard(done)

    def _expire(self, slot: int) -> None:
        for done in self._slots.pop(slot, ()):
            if not done.done():
                done.set_exception(TimeoutError())


def for_loop(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The ``Deadlines`` of ``loop``."""
    deadlines = _PER_LOOP.get(loop)
    if deadlines is None:
        deadlines = _PER_LOOP[loop] = Deadlines(loop)
    return deadlines
