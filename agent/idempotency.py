"""Responses kept by request id, so a redelivered request is answered again without running twice.

``ResponseStore`` is a bounded (entries and bytes), expiring map from request id to the encoded
response. The dispatcher stores every response before it replies; a redelivery of the same id is
answered from here and never reaches the directory. ``InFlight`` lets a duplicate that arrives
while the first copy is still running wait for that copy's response instead of running in parallel.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

#: Bytes of responses kept at most: redeliveries come soon after the first copy, and a full read of a
#: large directory (pages of thousands of resources) must not keep every page it returned.
MAX_BYTES = 8 * 1024 * 1024


class ResponseStore:
    def __init__(
        self,
        ttl: float = 3600.0,
        max_entries: int = 100_000,
        max_bytes: int = MAX_BYTES,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._clock = clock  # seconds, monotonic (tests move it)
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, request_id: str) -> bytes | None:
        item = self._items.get(request_id)
        if item is None:
            return None
        if item[0] < self._clock():
            self._drop(request_id)
            return None
        return item[1]

    def _drop(self, request_id: str) -> None:
        item = self._items.pop(request_id, None)
        if item is not None:
            self._bytes -= len(item[1])

    def put(self, request_id: str, response: bytes, ttl: float | None = None) -> None:
        items = self._items
        if request_id in items:
            self._drop(request_id)
        now = self._clock()
        items[request_id] = (now + (self._ttl if ttl is None else ttl), response)
        self._bytes += len(response)
        # Usually every bound holds and the oldest response is fresh: one look at it, no loop to set up.
        if self._bytes > self._max_bytes or len(items) > self._max or next(iter(items.values()))[0] < now:
            self._evict(now)

    def entries(self) -> list[tuple[str, float, bytes]]:
        """The responses kept, oldest first, each with the seconds it has left (``restore`` takes them back)."""
        now = self._clock()
        return [(request_id, expires - now, response) for request_id, (expires, response) in self._items.items()]

    def restore(self, entries: list[tuple[str, float, bytes]]) -> None:
        """Keep again the responses ``entries`` gave (of a store before a restart), for the time each had left."""
        for request_id, left, response in entries:
            if left > 0:
                self.put(request_id, response, left)

    def _evict(self, now: float) -> None:
        """Drop the oldest responses while the oldest has expired or a bound is exceeded; the newest is always
        kept, whatever its size."""
        items = self._items
        while items:
            oldest_id, (expires, _) = next(iter(items.items()))
            fits = self._bytes <= self._max_bytes or len(items) == 1
            if expires >= now and len(items) <= self._max and fits:
                break
            self._drop(oldest_id)


class InFlight:
    """Request ids being handled now, each with a future for its encoded response."""

    def __init__(self) -> None:
        # the future is made when a duplicate first waits for it (most requests never have one)
        self._running: dict[str, asyncio.Future[bytes | None] | None] = {}

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._running

    def begin(self, request_id: str) -> asyncio.Future[bytes | None] | None:
        """None if this caller runs the request; else the future of the copy already running."""
        running = self._running
        if request_id not in running:
            running[request_id] = None
            return None
        future = running[request_id]
        if future is None:
            future = running[request_id] = asyncio.get_running_loop().create_future()
        return future

    def end(self, request_id: str, response: bytes | None) -> None:
        future = self._running.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(response)
