"""``Deadlines``: a request's deadline enforced on the event loop, one timer per short slot in use.

What it is
    Every request carries a deadline (``docs/protocol.md``); the requester waits for its reply until
    then and the agent runs it until then. Both sides do so for every request, so the timer is on the
    hot path: ``asyncio.timeout`` makes a timer handle per request (pushed into and popped from the
    loop's heap with Python-level comparisons, cancelled one by one), about 5 us here. ``Deadlines``
    groups deadlines into ``GRAIN``-long slots with one event-loop timer per slot in use; a request
    costs a set insertion and removal. This module sits in ``protocol`` because it is the one package
    the agent, the transports and the directory plugins may all import.

Settings
    None (``GRAIN``: slot length, 50 ms).

Guarantees
    * ``start(done, timeout)`` fails the future ``done`` with the builtin ``TimeoutError`` once
      ``timeout`` seconds have passed, never earlier, at most ``GRAIN`` later (plus event-loop lag);
      ``cancel`` takes it back (call it however the wait ended).
    * ``with within(timeout)`` (or ``async with``) bounds a block of the running task the same way: at
      the deadline the block is cancelled and ``TimeoutError`` raised out of it, as ``asyncio.timeout``
      does (a cancellation from elsewhere stays a cancellation).
    * One ``Deadlines`` per event loop (``for_loop``), shared by everything on it.
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType
from typing import Protocol

#: Slot length (seconds): a deadline fires at most this much late.
GRAIN = 0.05

_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = weakref.WeakKeyDictionary()


class Expirable(Protocol):
    """What a slot holds: an ``asyncio.Future``, or a ``within`` block."""

    def done(self) -> bool: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, set[Expirable]] = {}

    def start(self, done: Expirable, timeout: float) -> int:
        """Fail ``done`` with ``TimeoutError`` after ``timeout`` seconds; returns the key for ``cancel``."""
        slot = int((self._loop.time() + timeout) / GRAIN) + 1
        waiting = self._slots.get(slot)
        if waiting is None:
            waiting = self._slots[slot] = set()
            self._loop.call_at(slot * GRAIN, self._expire, slot)
        waiting.add(done)
        return slot

    def cancel(self, done: Expirable, slot: int) -> None:
        waiting = self._slots.get(slot)
        if waiting is not None:
            waiting.discard(done)

    def within(self, timeout: float) -> _Within:
        """``with deadlines.within(seconds):`` like ``async with asyncio.timeout(seconds):``, on a shared timer.

        Entering and leaving the block awaits nothing, so a plain ``with`` does (the dispatcher's, once
        per request: ``async with`` makes two coroutines more); ``async with`` works the same."""
        return _Within(self, timeout)

    def _expire(self, slot: int) -> None:
        for done in self._slots.pop(slot, ()):
            if not done.done():
                done.set_exception(TimeoutError())


class _Within:
    """The async context manager of ``Deadlines.within``: ``asyncio.Timeout``'s cancel and uncancel logic
    (3.11), its timer a slot's. When the time is up the task is cancelled; on the way out a cancellation
    that is ours alone becomes ``TimeoutError``, while one from elsewhere goes on as it came."""

    __slots__ = ("_cancelling", "_deadlines", "_expired", "_seconds", "_slot", "_task")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self._deadlines = deadlines
        self._seconds = seconds
        self._expired = False

    def __enter__(self) -> _Within:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline block must run inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._slot = self._deadlines.start(self, self._seconds)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._deadlines.cancel(self, self._slot)  # out of its slot before the block ends
        if self._expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    async def __aenter__(self) -> _Within:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def expired(self) -> bool:
        """Whether the deadline passed while the block ran (and cancelled it)."""
        return self._expired

    # what a slot asks of each of its members (futures answer the same two)

    def done(self) -> bool:
        return self._expired

    def set_exception(self, _exception: BaseException, /) -> None:
        # only while the block runs (its exit takes it out of the slot first)
        self._expired = True
        self._task.cancel()


def for_loop(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The ``Deadlines`` of ``loop``."""
    deadlines = _PER_LOOP.get(loop)
    if deadlines is None:
        deadlines = _PER_LOOP[loop] = Deadlines(loop)
    return deadlines


_last: Deadlines | None = None  # the running loop's, kept at hand (a weak-keyed lookup makes a weakref)


def running() -> Deadlines:
    """The ``Deadlines`` of the running event loop."""
    global _last
    loop = asyncio.get_running_loop()
    last = _last
    if last is None or last._loop is not loop:
        last = _last = for_loop(loop)
    return last
