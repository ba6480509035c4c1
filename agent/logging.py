"""Structured logging with structlog: JSON when not on a terminal, secrets redacted in every line.

``configure`` is called once at start; ``set_level`` changes the lowest level logged while the
process runs (the control plane's ``logging.level``), for loggers made before and after.
Per-request context (``request_id``, ``domain``, ``transport``) is bound with
``structlog.contextvars`` by the dispatcher, so every line a request causes carries it. The
redaction processor masks values of keys that look like secrets and credentials embedded in URLs.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import ExcInfo

from protocol.redaction import REDACTED, redact_text

__all__ = ["REDACTED", "configure", "get_logger", "redact_secrets", "redact_text", "set_level"]

_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|credential|private|authorization|api[_-]?key|sig)", re.I)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        redacted = [_redact_value(key, v) for v in value]
        return redacted if isinstance(value, list) else tuple(redacted)
    return value


def redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no secret reaches a log line."""
    for key in list(event):
        if key != "event":
            event[key] = _redact_value(key, event[key])
        elif isinstance(event[key], str):
            event[key] = redact_text(event[key])
    return event


_LEVEL_OF_METHOD = {"debug": 10, "info": 20, "msg": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40}
_threshold = logging.INFO


def set_level(level: str) -> None:
    """Log ``level`` (debug, info, warning, error) and above from now on."""
    global _threshold
    _threshold = logging.getLevelName(level.upper())


def _level_gate(_logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop events below the current level (cached loggers keep no level of their own)."""
    if _LEVEL_OF_METHOD.get(method, logging.CRITICAL) < _threshold:
        raise structlog.DropEvent
    return event


def _redacted_traceback(out: TextIO, exc_info: ExcInfo) -> None:
    """Console exception formatter: a plain traceback (no local variables) with credentials masked, as in JSON."""
    text = io.StringIO()
    structlog.dev.plain_traceback(text, exc_info)
    out.write(redact_text(text.getvalue()))


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog for the process (``stream``, stderr by default; JSON unless ``console`` or a TTY
    with ``auto``). ``cloudprov agent run`` logs to stdout, where container runtimes collect logs."""
    stream = sys.stderr if stream is None else stream
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(exception_formatter=_redacted_traceback)
    )
    set_level(level)
    structlog.configure(
        processors=[
            _level_gate,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if as_json else structlog.processors.StackInfoRenderer(),
            redact_secrets,  # after the traceback is rendered to text, so exception messages are masked too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),  # the level: _level_gate
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
