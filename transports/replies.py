"""Requests in flight on the requester side of a queue transport, each waiting for its reply.

``PendingReplies.expect(request_id)`` registers a future for the duration of a ``with`` block;
``resolve`` hands a reply to the request it answers (a late or duplicate reply is counted in
``late`` and logged, never raised); ``fail_all`` ends every wait when the requester closes. Shared by
the ``amqp`` and ``sb`` requesters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class PendingReplies:
    def __init__(self, log: Any) -> None:
        self._futures: dict[str, asyncio.Future[bytes]] = {}
        self._log = log
        self.late = 0

    def __len__(self) -> int:
        return len(self._futures)

    @contextmanager
    def expect(self, request_id: str) -> Iterator[asyncio.Future[bytes]]:
        """A future for the reply to ``request_id``, registered while the block runs."""
        if request_id in self._futures:
            raise ValueError(f"request {request_id} is already in flight")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._futures[request_id] = future
        try:
            yield future
        finally:
            self._futures.pop(request_id, None)

    def resolve(self, request_id: str, payload: bytes) -> None:
        future = self._futures.get(request_id)
        if future is None or future.done():
            self.late += 1
            self._log.info("late or duplicate reply dropped", request_id=request_id)
            return
        future.set_result(payload)

    def fail_all(self, error: BaseException) -> None:
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
