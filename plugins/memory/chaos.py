"""Latency and fault injection for the memory directory: one call per simulated round trip.

Settings: ``MemorySettings.latency`` and ``MemorySettings.faults`` (rates, timeout, seed). The sleep
function is injectable, so tests observe the delays without waiting for them; by default it is a
``TimerQueue``'s, which waits as ``asyncio.sleep`` does at a fraction of its cost (a load test at a few
thousand round trips a second should measure the agent, not the simulated wait).

Guarantees: one random draw decides each round trip's fault (error, disconnect, timeout or none) and
delays draw from the same seeded generator, so a seed gives a repeatable run. A fault is raised
before the operation touches the data: a failed write never half-happens. After a disconnect the
"connection" is closed; the next round trip reopens it (counted in ``stats.reconnects``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from plugins.directory import DirectoryTimeoutError, UnavailableError
from plugins.memory import timerfd
from plugins.memory.latency import FixedLatency
from plugins.memory.settings import FaultSettings, MemorySettings

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class ChaosStats:
    """Counters a load test can print: round trips, injected failures by kind, reconnects."""

    round_trips: int = 0
    errors: int = 0
    disconnects: int = 0
    timeouts: int = 0
    reconnects: int = 0


class TimerQueue:
    """``asyncio.sleep`` for many concurrent simulated round trips, on one wake-up source at a time.

    ``asyncio.sleep`` makes a timer handle per call: pushed into the loop's heap and popped from it
    through a Python-level comparison of handles, then cancelled in a ``finally``. In a bare asyncio
    request loop at C=64 (callgrind) that is 35,000 of 88,000 instructions per request; with this
    queue, 13,000. Here a sleeper is a future and an entry in a heap of ``(wake-up time, sequence,
    future)`` tuples (compared in C), and one wake-up is armed, for the earliest; when it fires it
    wakes every sleeper then due and arms the next one.

    **The wake-up is a timerfd** where Linux has one (``precise``, the default): armed to the
    nanosecond on the loop's own clock, read by the loop as a socket with a reply would be. An
    event-loop timer waits in ``epoll`` in whole milliseconds, rounded up: a 5 ms round trip then took
    5 to 6 ms, 0.3 ms more on average (and up to 1 ms at 64 in flight, where wake-ups fall anywhere in a
    millisecond), which a load test would count against the agent. Elsewhere, or with
    ``precise=False``, the queue arms a loop timer instead.

    A sleeper wakes when ``asyncio.sleep`` would: never before its time, and late only as the loop is
    busy. A cancelled sleeper's entry is skipped when its time comes. The timerfd is watched only while
    someone sleeps, and a queue moves to a later event loop (tests and benches run one after another).
    """

    __slots__ = ("_due", "_fd", "_loop", "_precise", "_sequence", "_timer", "_timer_at", "_watched")

    def __init__(self, *, precise: bool = True) -> None:
        self._due: list[tuple[float, int, asyncio.Future[None]]] = []
        self._sequence = itertools.count()  # equal wake-up times wake in arrival order, never comparing futures
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._precise = precise and timerfd.available()  # False: wake-ups from a loop timer
        self._fd: timerfd.TimerFd | None = None
        self._watched = False

    @property
    def precise(self) -> bool:
        """Whether wake-ups come from a timerfd (else from an event-loop timer)."""
        return self._precise

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (a test's, a second run): the old one's wake-up never fires
            self._move_to(loop)
        when = loop.time() + seconds
        waiter = loop.create_future()
        heapq.heappush(self._due, (when, next(self._sequence), waiter))
        if when < self._timer_at:
            self._arm(loop, when)
        await waiter

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        self._close_fd()
        self._due, self._loop, self._timer, self._timer_at = [], loop, None, math.inf
        if self._precise:
            self._fd = timerfd.TimerFd.open()
            if self._fd is None:  # out of file descriptors, say: the loop's own timer still works
                self._precise = False

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer_at = when
        fd = self._fd
        if fd is None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(when, self._wake, loop)
            return
        fd.arm(when)
        if not self._watched:
            loop.add_reader(fd.fd, self._wake, loop)
            self._watched = True

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = self._fd
        if fd is not None:
            fd.clear()
        due = self._due
        # the wake-up fired, so its time counts as come even if the clock reads a hair before it
        now = max(loop.time(), self._timer_at)
        while due and due[0][0] <= now:
            waiter = heapq.heappop(due)[2]
            if not waiter.done():  # not cancelled meanwhile
                waiter.set_result(None)
        if due:
            self._arm(loop, due[0][0])
            return
        self._timer, self._timer_at = None, math.inf
        if self._watched and fd is not None:  # nobody sleeps: the loop stops watching the fd
            loop.remove_reader(fd.fd)
            self._watched = False

    def _close_fd(self) -> None:
        fd = self._fd
        if fd is not None:
            loop = self._loop
            if self._watched and loop is not None and not loop.is_closed():
                loop.remove_reader(fd.fd)
            fd.close()
        self._fd, self._watched = None, False

    def __del__(self) -> None:
        self._close_fd()


class Chaos:
    """Decides, per round trip, how long it takes and whether it fails."""

    def __init__(self, settings: MemorySettings, sleep: Sleep | None = None) -> None:
        self._latency = settings.latency
        self._faults: FaultSettings = settings.faults
        self._rng = random.Random(f"{settings.faults.seed}:chaos")
        self._sleep = sleep if sleep is not None else TimerQueue().sleep
        self._quiet = isinstance(self._latency, FixedLatency) and self._latency.seconds == 0
        self._faulty = settings.faults.error_rate + settings.faults.disconnect_rate + settings.faults.timeout_rate > 0
        self.connected = True
        self.stats = ChaosStats()

    async def round_trip(self, operation: str) -> None:
        """Wait the simulated latency of ``operation``, then maybe fail it."""
        self.stats.round_trips += 1
        if not self.connected:
            self.connected = True
            self.stats.reconnects += 1
        if not self._quiet:
            await self._sleep(self._latency.sample(self._rng))
        if not self._faulty:
            return
        faults, roll = self._faults, self._rng.random()
        if roll < faults.error_rate:
            self.stats.errors += 1
            raise UnavailableError(f"injected failure during {operation} (memory directory fault injection)")
        roll -= faults.error_rate
        if roll < faults.disconnect_rate:
            self.stats.disconnects += 1
            self.connected = False
            raise UnavailableError(f"injected disconnect during {operation} (memory directory fault injection)")
        roll -= faults.disconnect_rate
        if roll < faults.timeout_rate:
            self.stats.timeouts += 1
            await self._sleep(faults.timeout_seconds)
            raise DirectoryTimeoutError(
                f"injected timeout after {faults.timeout_seconds}s during {operation} (fault injection)"
            )
