"""Shared test helpers: a missing real server skips locally but fails in CI (CI=true)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def server_missing(what: str) -> NoReturn:
    """Skip on a developer machine, fail in CI: there every server the tests need must be running."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{what} is not available, and in CI every server must be (.ci/run starts them)")
    pytest.skip(f"{what} is not available (scripts/servers.sh starts it)")
