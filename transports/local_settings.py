"""``LocalSettings``: the settings of both sides of the local transport, read from its URL and options.

Apart from ``transports.local`` because that module is compiled (pyproject's ``[tool.cloudprov]
compiled``): a compiled dataclass reports ``int | None`` as ``type`` to ``typing.get_type_hints``,
which ``read_settings`` converts the URL's text by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from transports.registry import read_settings, split_url


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """Settings of both sides of the local transport (``retry_delay`` matters to the agent side only)."""

    broker: str = "default"
    max_message_size: int | None = None
    retry_delay: float = 0.0

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> LocalSettings:
        parts = split_url(url)
        name = unquote(parts.netloc or parts.path.strip("/")) or "default"
        return read_settings(cls, url, options, broker=name)
