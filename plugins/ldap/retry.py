"""The plugin's retry policy: tenacity, retrying exactly the recoverable errors.

Settings: ``LdapSettings.retry`` (attempts, initial_backoff, max_backoff, jitter). Guarantees:
exponential backoff with random jitter; only ``UnavailableError`` (server down, busy, unavailable,
timeout) is retried, the last error is re-raised as is. Reads retry any recoverable failure; writes
retry only failures that happened before the request reached a server (see ``directory.py``).
"""

from __future__ import annotations

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from plugins.ldap.errors import RECOVERABLE
from plugins.ldap.settings import RetrySettings


def retrying(settings: RetrySettings, retry_on: tuple[type[BaseException], ...] = RECOVERABLE) -> AsyncRetrying:
    """``async for attempt in retrying(s): with attempt: ...``"""
    return AsyncRetrying(
        retry=retry_if_exception_type(retry_on),
        stop=stop_after_attempt(settings.attempts),
        wait=wait_exponential(multiplier=settings.initial_backoff, max=settings.max_backoff)
        + wait_random(0, settings.jitter),
        reraise=True,
    )
