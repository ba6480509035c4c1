"""The target registry: a URL picks the target class, imported only when a URL asks for it.

What it is
    ``create_target(url, options=...)`` turns a target URL into an unopened ``Target`` (use it as
    ``async with``). Built-in schemes map to ``"module:Class"`` strings (``TARGET_ALIASES``); other
    packages add schemes through the entry point group ``cloudprov.targets`` (name = scheme, value =
    ``"module:Class"``). An unknown scheme is refused with "did you mean …?".

Connection URL / options
    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``embedded:`` (in memory) → the embedded
    store (``targets.embedded``); ``https://host/scim/v2`` or ``http://…`` → any SCIM 2.0 service
    (``targets.scim``). Settings come from the URL query string and from ``options`` (configuration
    file), ``options`` winning; each target documents its own.

Guarantees
    Nothing but this module is imported until a URL needs it. Unknown or unreadable settings raise
    ``TargetSettingsError`` naming the setting (and the nearest known one).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, TypeVar

from service.provisioning.targets.base import Target, TargetError
from transports.registry import TransportSettingsError, read_settings

TARGET_GROUP = "cloudprov.targets"

TARGET_ALIASES: dict[str, str] = {
    "sqlite": "service.provisioning.targets.embedded:EmbeddedTarget",
    "embedded": "service.provisioning.targets.embedded:EmbeddedTarget",
    "http": "service.provisioning.targets.scim:ScimTarget",
    "https": "service.provisioning.targets.scim:ScimTarget",
}

S = TypeVar("S")


class TargetSettingsError(TargetError, ValueError):
    """A target URL, scheme or setting is unknown or unreadable (the message names it)."""


def read_target_settings(cls: type[S], url: str, options: Mapping[str, Any] | None = None, **from_url: Any) -> S:
    """The settings dataclass ``cls`` from ``options``, then the URL query, then ``from_url``."""
    try:
        return read_settings(cls, url, options, **from_url)
    except TransportSettingsError as exc:
        raise TargetSettingsError(str(exc)) from None


def known_schemes() -> list[str]:
    """Every scheme that resolves: built-in aliases and installed entry points."""
    return sorted({*TARGET_ALIASES, *(ep.name for ep in entry_points(group=TARGET_GROUP))})


def resolve(url: str) -> str:
    """The ``"module:Class"`` path for a target URL, without importing anything."""
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise TargetSettingsError(f"{url!r} is not a target URL (expected sqlite:///path, embedded: or https://…)")
    if scheme in TARGET_ALIASES:
        return TARGET_ALIASES[scheme]
    for ep in entry_points(group=TARGET_GROUP, name=scheme):
        return ep.value
    known = known_schemes()
    close = difflib.get_close_matches(scheme, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise TargetSettingsError(f"no target for scheme {scheme!r}{hint} (known: {', '.join(known)})")


def create_target(url: str, *, options: Mapping[str, Any] | None = None) -> Target:
    """An unopened ``Target`` for ``url`` (see the module docstring for the schemes)."""
    path = resolve(url)
    module_name, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module_name), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise TargetSettingsError(f"{path!r} is not a Target class")
    factory = getattr(cls, "from_url", None)
    if factory is None:
        raise TargetSettingsError(f"{path!r} has no from_url classmethod")
    target = factory(url, options=dict(options or {}))
    if not isinstance(target, Target):
        raise TypeError(f"{path}.from_url returned {type(target).__name__}, not a Target")
    return target
