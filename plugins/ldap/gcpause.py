"""``collector_paused()``: the cyclic garbage collector held off for one synchronous burst of allocations.

Settings: none. Guarantees:
- bonsai parses a page of results in one C call and the plugin converts it in one loop; each makes
  tens of thousands of container objects (an entry's value lists) that never form cycles and die by
  reference counting. Left running, the collector walked them in young passes and, every page or
  two, a full pass over the whole heap that freed nothing (a read of 100,000 users: 57 full passes
  collected 23 objects in all, ~3.7 s of a 16 s read). Paused around the two bursts: 18 full passes.
- only around synchronous code (no ``await`` inside, so no other task runs meanwhile); the previous
  state comes back on exit, errors included; a collector disabled by the application stays disabled.
- cheap enough for every reply, one-entry lookups included (a class, not a generator-based context
  manager: 0.3 instead of 2 us); ``call_paused(function, *args)``, for the calls made at every reply,
  costs less again (no object, no ``__enter__``/``__exit__`` calls).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


def call_paused(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` inside ``with collector_paused():``, for short synchronous calls."""
    if not gc.isenabled():
        return function(*args)
    gc.disable()
    try:
        return function(*args)
    finally:
        gc.enable()


class collector_paused:  # noqa: N801 - used like the function it replaces
    """``with collector_paused():`` the collector is off inside and as it was outside."""

    __slots__ = ("_resume",)

    def __enter__(self) -> None:
        self._resume = gc.isenabled()
        if self._resume:
            gc.disable()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._resume:
            gc.enable()
