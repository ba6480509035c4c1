"""``protocol.deadlines``: request deadlines on one event-loop timer per slot, futures and blocks alike."""

from __future__ import annotations

import asyncio

import pytest

from protocol.deadlines import GRAIN, for_loop, running


async def test_a_future_past_its_deadline_fails_with_timeout_error_never_earlier() -> None:
    """A future still pending at its deadline fails with the builtin TimeoutError, not before it; its slot's
    timer is due at most GRAIN after the deadline."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    started = loop.time()
    slot = running().start(done, 0.02)
    asked = loop.time()
    assert started + 0.02 <= slot * GRAIN <= asked + 0.02 + GRAIN
    with pytest.raises(TimeoutError):
        await done
    assert loop.time() - started >= 0.02


async def test_a_cancelled_deadline_leaves_the_future_alone() -> None:
    """Once taken back, the slot passes without touching the future."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    deadlines = running()
    deadlines.cancel(done, deadlines.start(done, 0.01))
    await asyncio.sleep(2 * GRAIN)
    assert not done.done()


async def test_a_block_outliving_its_deadline_is_cancelled_with_timeout_error() -> None:
    """``within`` cancels the block at its deadline and raises TimeoutError out of it, like asyncio.timeout."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with running().within(0.02) as timeout:
            await asyncio.sleep(10)
    assert timeout.expired()
    assert loop.time() - started >= 0.02  # never earlier (how much later: the slots' test above)
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0  # the cancel it made is taken back


async def test_a_plain_with_block_is_bounded_as_an_async_with_block() -> None:
    """``with within(…)`` (no coroutine to enter or leave) cancels and raises exactly as ``async with`` does."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError), running().within(0.02) as timeout:
        await asyncio.sleep(10)
    assert timeout.expired()
    assert loop.time() - started >= 0.02  # never earlier (how much later: the slots' test above)
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0
    with running().within(10) as in_time:
        await asyncio.sleep(0)
    assert not in_time.expired()


async def test_a_block_that_ends_in_time_is_not_cancelled_later() -> None:
    """A block that finished leaves its slot: its deadline passes without touching the task or the loop."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with running().within(0.01) as timeout:
            await asyncio.sleep(0)
        await asyncio.sleep(2 * GRAIN)
    finally:
        loop.set_exception_handler(None)
    assert not timeout.expired()
    assert errors == []


async def test_a_cancel_from_outside_is_not_turned_into_a_timeout() -> None:
    """Cancelling the task within a block raises CancelledError, as asyncio.timeout does."""

    async def guarded() -> None:
        async with running().within(10):
            await asyncio.sleep(10)

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_deadlines_in_one_slot_share_one_timer() -> None:
    """Deadlines that fall into the same slot add one event-loop timer, not one each."""
    loop = asyncio.get_running_loop()
    deadlines = for_loop(loop)
    timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
    futures: list[asyncio.Future[None]] = [loop.create_future() for _ in range(100)]
    slots = [deadlines.start(future, 300.0) for future in futures]
    assert len(loop._scheduled) - timers_before == len(set(slots)) <= 2  # type: ignore[attr-defined]
    for future, slot in zip(futures, slots, strict=True):
        deadlines.cancel(future, slot)


async def test_running_is_the_loops_deadlines() -> None:
    """``running()`` is the running loop's one Deadlines."""
    assert running() is for_loop(asyncio.get_running_loop())


async def test_a_future_that_already_ended_is_not_touched() -> None:
    """A future with a result keeps it when its slot expires."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    witness: asyncio.Future[None] = loop.create_future()
    deadlines = for_loop(loop)
    deadlines.start(done, 0.01)
    deadlines.start(witness, 0.01)
    done.set_result("answered")
    with pytest.raises(TimeoutError):
        await witness
    assert done.result() == "answered"
