"""Shared test helpers: a missing real server skips locally but fails in CI (CI=true); hypothesis profiles."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# No example has a deadline, nor a health check on how long drawing takes: a test asserts behaviour, never
# time. CI draws the same examples every run, so its result depends on the commit alone; a developer's
# runs draw new ones each time, and `pytest --hypothesis-profile=explore` draws 2,000 where a test does
# not set its own count.
_UNTIMED: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("dev", **_UNTIMED)
settings.register_profile("ci", derandomize=True, **_UNTIMED)
settings.register_profile("explore", max_examples=2000, **_UNTIMED)
settings.load_profile("ci" if IN_CI else "dev")


def server_missing(what: str) -> NoReturn:
    """Skip on a developer machine, fail in CI: there every server the tests need must be running."""
    if IN_CI:
        pytest.fail(f"{what} is not available, and in CI every server must be (.ci/run starts them)")
    pytest.skip(f"{what} is not available (scripts/servers.sh starts it)")
