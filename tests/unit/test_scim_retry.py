"""The SCIM handler's own retry of recoverable directory errors: off by default, on when configured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.config import RetrySection
from agent.scim.handler import ScimHandler
from agent.scim.profile import load_profile
from plugins.directory import Entry, UnavailableError
from protocol.envelope import ScimOperation


class DownDirectory:
    """A directory whose every search fails as unavailable, counting the tries."""

    recoverable_errors = (UnavailableError,)
    base_dn = "dc=example,dc=com"

    def __init__(self) -> None:
        self.searches = 0

    async def search(self, *args: Any, **kwargs: Any) -> AsyncIterator[list[Entry]]:
        self.searches += 1
        raise UnavailableError("server down")
        yield []  # pragma: no cover - makes this an async generator


@pytest.mark.parametrize(("retry", "tries"), [(None, 1), (RetrySection(attempts=3, initial_backoff=0, jitter=0), 3)])
async def test_handler_retries_only_when_configured(retry: RetrySection | None, tries: int) -> None:
    """By default a recoverable failure is tried once (the plugin retries itself) and answered 503 transient;
    retry.attempts above 1 tries the whole operation that many times."""
    directory = DownDirectory()
    handler = ScimHandler(directory, load_profile("openldap"), retry=retry)  # type: ignore[arg-type]
    result = await handler.handle(ScimOperation("GET", "/Users", {}, None))
    assert (result.status, result.transient) == (503, True)
    assert directory.searches == tries
    assert RetrySection().attempts == 1
