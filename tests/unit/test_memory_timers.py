"""The memory directory's simulated waits (``plugins.memory.chaos.TimerQueue``): as ``asyncio.sleep`` does.

Each sleeper must wake no earlier than its time, all of them must wake, a cancelled one must not stop
the others, and a queue must keep working when a later event loop uses it (tests and benches run one
loop after another).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from plugins.memory import MemoryDirectory, MemorySettings
from plugins.memory.chaos import TimerQueue


async def _sleep_and_note(timers: TimerQueue, seconds: float, woke: list[tuple[float, float, int]], n: int) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time() + seconds
    await timers.sleep(seconds)
    woke.append((loop.time(), due, n))


async def test_every_sleeper_wakes_at_or_after_its_time_in_time_order() -> None:
    """Sleepers started in any order with any delays (equal ones included) each wake, never early."""
    timers = TimerQueue()
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
    assert [due for _, due, _ in woke] == sorted(due for _, due, _ in woke)


async def test_a_cancelled_sleeper_leaves_the_others_waking() -> None:
    """Cancelling the earliest sleeper raises ``CancelledError`` in it alone; later ones still wake."""
    timers = TimerQueue()
    woke: list[tuple[float, float, int]] = []
    first = asyncio.create_task(_sleep_and_note(timers, 0.005, woke, 0))
    second = asyncio.create_task(_sleep_and_note(timers, 0.01, woke, 1))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, timeout=5)
    assert [n for _, _, n in woke] == [1]


def test_a_queue_keeps_working_on_a_later_event_loop() -> None:
    """A loop that ended while a sleeper waited leaves no timer behind that the next loop would wait on."""
    timers = TimerQueue()

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
