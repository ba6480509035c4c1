"""The memory directory's simulated waits (``plugins.memory.chaos.TimerQueue``): as ``asyncio.sleep`` does.

Each sleeper must wake no earlier than its time, all of them must wake, a cancelled one must not stop
the others, and a queue must keep working when a later event loop uses it (tests and benches run one
loop after another): with its wake-ups from a timerfd (Linux) and from an event-loop timer alike.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import random
import sys

import pytest

from plugins.memory import MemoryDirectory, MemorySettings
from plugins.memory.chaos import TimerQueue


async def _sleep_and_note(timers: TimerQueue, seconds: float, woke: list[tuple[float, float, int]], n: int) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time() + seconds
    await timers.sleep(seconds)
    woke.append((loop.time(), due, n))


@pytest.fixture(params=[True, False], ids=["timerfd", "loop-timer"])
def precise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_every_sleeper_wakes_at_or_after_its_time_in_time_order(precise: bool) -> None:
    """Sleepers started in any order with any delays (equal ones included) each wake, never early."""
    timers = TimerQueue(precise=precise)
    rng = random.Random(5)
    delays = [rng.choice([0.0, 0.001, 0.003, 0.003, 0.01, 0.02]) for _ in range(60)]
    woke: list[tuple[float, float, int]] = []
    async with asyncio.TaskGroup() as group:
        for n, delay in enumerate(delays):
            group.create_task(_sleep_and_note(timers, delay, woke, n))
            if n % 7 == 0:
                await asyncio.sleep(0.0005)  # later sleepers start while earlier ones wait
    assert sorted(n for _, _, n in woke) == list(range(len(delays)))
    assert all(woke_at >= due for woke_at, due, _ in woke)
    # in time order: this test reads the clock a moment before the queue does, and a collector pass or
    # the machine preempting the process in between can make that moment long, so only sleepers due
    # 5 ms apart must keep their order (a queue waking out of order swaps ones 1-20 ms apart)
    dues = [due for _, due, _ in woke]
    assert all(earlier <= later + 5e-3 for earlier, later in itertools.pairwise(dues))


async def test_a_cancelled_sleeper_leaves_the_others_waking(precise: bool) -> None:
    """Cancelling the earliest sleeper raises ``CancelledError`` in it alone; later ones still wake."""
    timers = TimerQueue(precise=precise)
    woke: list[tuple[float, float, int]] = []
    first = asyncio.create_task(_sleep_and_note(timers, 0.005, woke, 0))
    second = asyncio.create_task(_sleep_and_note(timers, 0.01, woke, 1))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, timeout=5)
    assert [n for _, _, n in woke] == [1]


def test_a_queue_keeps_working_on_a_later_event_loop(precise: bool) -> None:
    """A loop that ended while a sleeper waited leaves no timer behind that the next loop would wait on."""
    timers = TimerQueue(precise=precise)

    async def abandon() -> None:
        asyncio.get_running_loop().create_task(timers.sleep(0.005))  # the loop ends before it is due
        await asyncio.sleep(0)

    async def wait_briefly() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(timers.sleep(0.01), timeout=5)
        return loop.time() - started

    asyncio.run(abandon())
    assert asyncio.run(wait_briefly()) >= 0.01


async def test_the_directory_waits_its_latency_by_default() -> None:
    """Without an injected sleep, a round trip takes at least the configured latency."""
    settings = MemorySettings.model_validate({"latency": 0.02, "seed_users": 3})
    async with MemoryDirectory(settings) as directory:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(directory.ping() for _ in range(10)))
        assert loop.time() - started >= 0.02
        assert directory.stats.round_trips >= 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfds are Linux's")
def test_on_linux_the_wake_ups_come_from_a_timerfd_watched_only_while_someone_sleeps() -> None:
    """The default queue arms a timerfd; the loop watches it while a sleeper waits and not after."""
    timers = TimerQueue()
    assert timers.precise

    async def sleep_and_look() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        sleeper = asyncio.create_task(timers.sleep(0.002))
        await asyncio.sleep(0)
        assert timers._fd is not None
        fd = timers._fd.fd
        watched_while_sleeping = timers._watched and loop.remove_reader(fd)
        if watched_while_sleeping:  # put back what the look took away
            loop.add_reader(fd, timers._wake, loop)
        await sleeper
        return watched_while_sleeping, loop.remove_reader(fd)

    assert asyncio.run(sleep_and_look()) == (True, False)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_queues_used_on_many_loops_leave_no_file_descriptor_open() -> None:
    """Each loop change closes the previous timerfd, and a dropped queue closes its own."""
    before = _open_fds()
    for _ in range(20):
        timers = TimerQueue()
        for _ in range(3):
            asyncio.run(timers.sleep(0.0001))
        del timers
    gc.collect()
    assert _open_fds() == before
