"""``Deadlines``: operation timeouts grouped in slots of the event loop's clock."""

from __future__ import annotations

import asyncio

import pytest

from plugins.ldap.deadlines import GRAIN, for_loop


async def test_an_operation_past_its_deadline_fails_with_timeout_error() -> None:
    """The future of an operation still pending at its deadline fails with the builtin TimeoutError."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    for_loop(loop).start(done, 0.01)
    with pytest.raises(TimeoutError):
        await done


async def test_a_cancelled_deadline_leaves_the_operation_alone() -> None:
    """Once taken back, the deadline's slot passes without touching the future."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    deadlines = for_loop(loop)
    deadlines.cancel(done, deadlines.start(done, 0.01))
    witness: asyncio.Future[None] = loop.create_future()
    deadlines.start(witness, 0.01)  # same slot or a later one: expires after done's would have
    with pytest.raises(TimeoutError):
        await witness
    await asyncio.sleep(GRAIN)
    assert not done.done()


async def test_an_operation_that_already_ended_is_not_touched() -> None:
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


async def test_one_deadlines_per_event_loop() -> None:
    """Every connection on a loop shares its Deadlines."""
    loop = asyncio.get_running_loop()
    assert for_loop(loop) is for_loop(loop)
