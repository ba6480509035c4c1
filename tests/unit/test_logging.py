"""Logging: no secret reaches a log line, and every line a request causes carries its context."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from agent.logging import REDACTED, configure, redact_secrets, redact_text
from tests.agent_support import DOMAIN, HandDelivery, running_agent

SECRET = "s3cr3t-Pa55"


def _redact(**event: Any) -> MutableMapping[str, Any]:
    return redact_secrets(None, "info", {"event": "something happened", **event})


def _assert_hidden(event: MutableMapping[str, Any]) -> None:
    assert SECRET not in json.dumps(event, default=str)


@pytest.mark.parametrize(
    "key", ["password", "bind_password", "token", "access_token", "secret", "client_secret", "authorization", "api_key"]
)
def test_secret_keys_are_masked(key: str) -> None:
    """A value logged under a key that names a secret is replaced by the mask."""
    event = _redact(**{key: SECRET})
    assert event[key] == REDACTED


def test_nested_secret_keys_are_masked() -> None:
    """Secrets inside a logged mapping (a settings dump) are masked too."""
    event = _redact(settings={"url": "ldap://dc", "bind": {"password": SECRET}, "timeout": 5})
    _assert_hidden(event)
    assert event["settings"]["url"] == "ldap://dc"
    assert event["settings"]["timeout"] == 5


@pytest.mark.parametrize(
    "text",
    [
        f"amqp://user:{SECRET}@mq.example.com:5672/vhost",
        f"connecting to amqps://svc-account:{SECRET}@mq/ failed",
        f"ldaps://cn=admin:{SECRET}@dc.example.com",
        f"redis://:{SECRET}@cache:6379/0",
    ],
)
def test_url_credentials_are_masked(text: str) -> None:
    """The password part of a URL is masked wherever the URL appears, the user and host kept."""
    event = _redact(url=text, error=f"ConnectionError({text!r})")
    _assert_hidden(event)
    assert "@" in event["url"]
    assert REDACTED in event["url"]


def test_url_credentials_in_the_event_text_are_masked() -> None:
    """A URL with credentials inside the event message itself is masked."""
    event = redact_secrets(None, "info", {"event": f"cannot reach amqp://u:{SECRET}@h/"})
    assert event["event"] == f"cannot reach amqp://u:{REDACTED}@h/"


@pytest.mark.parametrize(
    "text",
    [
        f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={SECRET}=",
        f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={SECRET};EntityPath=q",
        f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={SECRET};EndpointSuffix=core.windows.net",
        f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessSignature=SharedAccessSignature sr=x&sig={SECRET}&se=1",
    ],
)
def test_connection_string_keys_are_masked(text: str) -> None:
    """Service Bus and storage connection strings keep their endpoint but lose their key or signature."""
    event = _redact(connection=text)
    _assert_hidden(event)
    assert "Endpoint" in event["connection"] or "AccountName=a" in event["connection"]


def test_secrets_in_lists_are_masked() -> None:
    """URLs with credentials inside a logged list (cluster nodes) are masked."""
    event = _redact(nodes=[f"amqp://u:{SECRET}@a/", f"amqp://u:{SECRET}@b/"], attempts=(1, 2))
    _assert_hidden(event)
    assert event["attempts"] == (1, 2)


def test_plain_values_are_left_alone() -> None:
    """Values that hold no secret pass through unchanged."""
    event = _redact(request_id="r1", domain=DOMAIN, count=3, url="http://127.0.0.1:8080/scim/v2")
    assert event == {
        "event": "something happened",
        "request_id": "r1",
        "domain": DOMAIN,
        "count": 3,
        "url": "http://127.0.0.1:8080/scim/v2",
    }


def test_redact_text_keeps_the_user() -> None:
    """Masking keeps enough to debug with: scheme, user and host stay."""
    assert redact_text(f"amqp://alice:{SECRET}@mq/") == f"amqp://alice:{REDACTED}@mq/"


def _connect() -> None:
    raise ConnectionError(f"cannot connect to amqp://u:{SECRET}@mq/")


def test_configured_json_lines_carry_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON log line from the configured pipeline, exception traceback included, holds no secret."""
    configure("info", "json")
    try:
        log = structlog.get_logger("test.redaction")
        log.info("connected", url=f"amqp://u:{SECRET}@mq/", password=SECRET)
        try:
            _connect()
        except ConnectionError:
            log.exception("connect failed")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [line["event"] for line in lines] == ["connected", "connect failed"]
    assert "ConnectionError" in lines[1]["exception"]
    assert SECRET not in err


def test_configured_console_lines_carry_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """On the console too, an exception's traceback is masked like the rest of the line."""
    configure("info", "console")
    try:
        log = structlog.get_logger("test.redaction.console")
        try:
            _connect()
        except ConnectionError:
            log.exception("connect failed", url=f"amqp://u:{SECRET}@mq/")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "connect failed" in err
    assert "ConnectionError" in err
    assert REDACTED in err
    assert SECRET not in err


# ------------------------------------------------------------------------------------- request context


@pytest.fixture
def log_lines() -> Iterator[list[MutableMapping[str, Any]]]:
    """Captured log entries with the contextvars merged in (as the configured pipeline does)."""
    capture = LogCapture()
    processors = structlog.get_config()["processors"]
    saved = list(processors)
    processors.clear()
    processors.extend([structlog.contextvars.merge_contextvars, capture])
    structlog.configure(processors=processors)
    try:
        yield capture.entries
    finally:
        processors.clear()
        processors.extend(saved)
        structlog.configure(processors=processors)


async def test_request_lines_carry_request_id_and_domain(log_lines: list[MutableMapping[str, Any]]) -> None:
    """Lines logged while a request runs (retries, refusals) carry its request_id and domain."""
    async with running_agent(memory={"faults": {"error_rate": 1.0}}, dispatcher={"max_deliveries": 1}) as harness:
        failing = await harness.client.call("GET", "/Users")
        assert failing.status == 503
        refused = harness.client.request("GET", "/Users")
        unsigned = HandDelivery(refused.with_signature("", "").encode())
        await harness.agent.dispatcher.process(unsigned)
    retries = [line for line in log_lines if line["event"] == "directory call failed, retrying"]
    assert retries
    assert all(line.get("request_id") == failing.request_id for line in retries)
    assert all(line.get("domain") == DOMAIN for line in retries)
    refusals = [line for line in log_lines if line["event"] == "request refused"]
    assert [(line["request_id"], line["domain"]) for line in refusals] == [(refused.id, DOMAIN)]


async def test_request_context_does_not_leak_to_the_next(log_lines: list[MutableMapping[str, Any]]) -> None:
    """A line about a later message does not carry the id of an earlier request."""
    async with running_agent() as harness:
        signed = harness.client.request("GET", "/Users")
        await harness.client.send(signed.with_signature("nobody", "AAAA"))
        lost = asyncio.create_task(harness.requester.request(DOMAIN, "junk", b"junk", timeout=5))
        await harness.dead_letter_count(1)
        lost.cancel()
    dead = [line for line in log_lines if line["event"] == "dead-lettered"]
    assert len(dead) == 1
    assert "request_id" not in dead[0]


async def test_retries_are_logged_with_the_request_context(log_lines: list[MutableMapping[str, Any]]) -> None:
    """Each retry of a failing directory call is logged with its attempt number and the request's id."""
    async with running_agent(
        memory={"faults": {"error_rate": 1.0}}, dispatcher={"max_deliveries": 1}, retry={"attempts": 3}
    ) as harness:
        response = await harness.client.call("GET", "/Users")
    retries = [line for line in log_lines if line["event"] == "retrying"]
    assert [line["attempt"] for line in retries] == [1]
    assert retries[0]["request_id"] == response.request_id
    assert "UnavailableError" in retries[0]["error"]
