"""The plugin's retry policy: tenacity, retrying exactly the recoverable errors.

Settings: ``LdapSettings.retry`` (attempts, initial_backoff, max_backoff, jitter). Guarantees:
exponential backoff with random jitter; only ``UnavailableError`` (server down, busy, unavailable,
timeout) is retried, except ``PoolExhaustedError`` (the caller waited a whole operation timeout for a
connection already); the last error is re-raised as is. Reads retry any recoverable failure; a write
that may have reached the server raises ``WriteOutcomeUnknownError``, which is never retried (see
``directory.py``).
"""

from __future__ import annotations

import asyncio

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from plugins.directory import PoolExhaustedError
from plugins.ldap.errors import RECOVERABLE
from plugins.ldap.settings import RetrySettings


def retrying(
    settings: RetrySettings, retry_on: tuple[type[BaseException], ...] = RECOVERABLE, *, first_wait: bool = False
) -> AsyncRetrying:
    """``async for attempt in retrying(s): with attempt: ...``

    ``first_wait``: the caller already made the first try (outside tenacity, to keep the common path
    cheap) — wait once before the first attempt here, and allow one attempt fewer.
    """
    wait = wait_exponential(multiplier=settings.initial_backoff, max=settings.max_backoff) + wait_random(
        0, settings.jitter
    )

    async def pause_first(state: RetryCallState) -> None:
        if first_wait and state.attempt_number == 1:
            await asyncio.sleep(wait(state))

    return AsyncRetrying(
        retry=retry_if_exception_type(retry_on) & retry_if_not_exception_type(PoolExhaustedError),
        stop=stop_after_attempt(max(1, settings.attempts - 1) if first_wait else settings.attempts),
        wait=wait,
        before=pause_first,
        reraise=True,
    )
