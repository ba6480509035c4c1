"""Settings from the control plane laid over the file settings, and the log level changed while running."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from agent.config import AgentSettings
from agent.lifecycle.remote import LIVE_KEYS, overlay
from agent.logging import configure, set_level


def _file_settings() -> AgentSettings:
    return AgentSettings.model_validate({"scim": {"max_page_size": 500}, "signing": {"clock_skew": 10}})


def test_live_keys_are_laid_over_the_file_settings_and_the_rest_is_untouched() -> None:
    base = _file_settings()
    settings, skipped = overlay(base, {"scim.max_page_size": 50, "logging.level": "warning"})
    assert skipped == {}
    assert settings.scim.max_page_size == 50
    assert settings.logging.level == "warning"
    assert settings.signing.clock_skew == 10
    assert settings.scim.default_page_size == base.scim.default_page_size
    assert base.scim.max_page_size == 500  # the file settings stay as they were (a dropped key reverts)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("scim.max_page_size", 0, "greater than or equal to 1"),
        ("scim.max_page_size", "many", "valid integer"),
        ("logging.level", "loud", "'debug', 'info', 'warning' or 'error'"),
        ("signing.clock_skew", -1, "greater than or equal to 0"),
        ("transport.url", "amqp://elsewhere", "needs an agent restart"),
        ("dispatcher.max_in_flight", 8, "needs an agent restart"),
        ("directory.urls", ["ldaps://dc2"], "needs an agent restart"),  # a plugin setting
        ("scim", {"max_page_size": 5}, "not an agent setting"),
        ("no.such", 1, "not an agent setting"),
    ],
)
def test_a_bad_or_restart_only_key_is_skipped_with_its_reason(key: str, value: object, reason: str) -> None:
    base = _file_settings()
    settings, skipped = overlay(base, {key: value, "scim.default_page_size": 7})
    assert reason in skipped[key]
    assert settings.scim.default_page_size == 7  # the good key still applies
    assert settings.scim.max_page_size == 500
    assert settings.transport == base.transport


def test_every_live_key_names_a_setting() -> None:
    base = AgentSettings()
    for key in LIVE_KEYS:
        section, field = key.split(".")
        assert hasattr(getattr(base, section), field), key


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure("info", "json", stream=stream)
    yield stream
    configure("info", "auto")


def test_the_level_changes_for_loggers_made_and_cached_before(log_stream: io.StringIO) -> None:
    log = structlog.get_logger("early").bind(component="x")
    log.info("first")
    set_level("warning")
    log.info("hidden")
    log.warning("shown")
    set_level("debug")
    log.debug("detail")
    events = [json.loads(line)["event"] for line in log_stream.getvalue().splitlines()]
    assert events == ["first", "shown", "detail"]
