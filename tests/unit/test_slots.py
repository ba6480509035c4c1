"""``protocol.slots.Slots`` (the dispatcher's bound on deliveries in flight, the LDAP pool's on connections lent):
a slot per holder, handed on in order, never lost."""

from __future__ import annotations

import asyncio

from protocol.slots import Slots


async def test_a_released_slot_goes_to_the_oldest_waiter() -> None:
    """With every slot taken, acquirers wait; each release lets exactly the oldest one through."""
    slots = Slots(1)
    await slots.acquire()
    order: list[int] = []

    async def take(number: int) -> None:
        await slots.acquire()
        order.append(number)

    waiting = [asyncio.create_task(take(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert order == []
    slots.release()
    await asyncio.sleep(0)
    assert order == [0]
    slots.release()
    slots.release()
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2]


async def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    """A slot handed to a waiter whose task is cancelled before it runs goes to the next waiter, not nowhere."""
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # handed to first ...
    first.cancel()  # ... which is cancelled before it resumes
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)  # the slot reached second


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    """A waiter cancelled while waiting is skipped: the next release frees a slot for a newcomer."""
    slots = Slots(1)
    await slots.acquire()
    gone = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    slots.release()
    await asyncio.wait_for(slots.acquire(), 1)


async def test_taking_a_slot_without_waiting_counts_as_acquiring_one() -> None:
    """``take`` takes only a free slot (never one a waiter is owed), and a taken slot is released as any."""
    slots = Slots(2)
    assert slots.take()
    await slots.acquire()
    assert not slots.take()  # none free: the caller must wait in line
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # handed to the waiter, not left free
    await waiter
    assert not slots.take()
    slots.release()
    assert slots.take()
