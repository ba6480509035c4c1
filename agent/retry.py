"""Retry policies (tenacity): retry exactly the errors a plugin or transport declares recoverable.

Backoff is exponential from ``initial_backoff`` up to ``max_backoff`` with up to ``jitter``
seconds of random extra wait; each retry is logged. Everything else surfaces at once.
"""

from __future__ import annotations

from typing import Any

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from agent.config import RetrySection

_log = structlog.get_logger("cloudprov.retry")


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    _log.warning(
        "retrying",
        attempt=state.attempt_number,
        error=repr(error),
        wait=round(state.next_action.sleep, 3) if state.next_action else None,
    )


def retrying(settings: RetrySection, recoverable: tuple[type[BaseException], ...], **overrides: Any) -> AsyncRetrying:
    """An ``AsyncRetrying`` for one call: ``async for attempt in retrying(...): with attempt: ...``."""
    options: dict[str, Any] = {
        "retry": retry_if_exception_type(recoverable),
        "stop": stop_after_attempt(settings.attempts),
        "wait": wait_exponential(multiplier=settings.initial_backoff, max=settings.max_backoff)
        + wait_random(0, settings.jitter),
        "reraise": True,
        "before_sleep": _log_retry,
    }
    options.update(overrides)
    return AsyncRetrying(**options)
