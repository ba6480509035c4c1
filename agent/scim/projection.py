"""``attributes`` and ``excludedAttributes`` (RFC 7644 §3.4.2.5, §3.9) applied to SCIM resources.

Paths are case-insensitive and may name sub-attributes (``name.givenName``, ``emails.value``) or
be qualified by a schema URN (``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department``).
``id`` and ``schemas`` are always returned and cannot be excluded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent.scim.profile import CORE_GROUP, CORE_USER, ENTERPRISE
from protocol.errors import invalid_path

_ATTR_NAME = re.compile(r"\$?[A-Za-z][A-Za-z0-9_-]*")
ALWAYS = frozenset({"id", "schemas"})
_URNS = (ENTERPRISE, CORE_USER, CORE_GROUP)


@dataclass(frozen=True, slots=True)
class AttrPath:
    extension: str | None  # the extension URN the attribute lives under, or None for core
    name: str  # lower-cased
    sub: str | None  # lower-cased


def parse_paths(text: str | None) -> list[AttrPath] | None:
    """``"userName,name.givenName"`` → paths; None when the parameter is absent or empty."""
    if not text or not text.strip():
        return None
    paths = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        extension = None
        for urn in _URNS:
            if item.lower().startswith(urn.lower() + ":"):
                item = item[len(urn) + 1 :]
                extension = urn if urn == ENTERPRISE else None
                break
            if item.lower() == urn.lower():
                paths.append(AttrPath(None, urn.lower(), None))
                item = ""
                break
        if not item:
            continue
        name, _, sub = item.partition(".")
        if not name or not all(_ATTR_NAME.fullmatch(part) for part in (name, sub or "x")):
            raise invalid_path(f"{raw.strip()!r} is not an attribute path")
        paths.append(AttrPath(extension, name.lower(), sub.lower() or None))
    return paths or None


def _pick(source: dict[str, Any], paths: list[AttrPath], extension: str | None) -> dict[str, Any]:
    picked: dict[str, Any] = {}
    for key, value in source.items():
        lowered = key.lower()
        if extension is None and (lowered in ALWAYS or key == ENTERPRISE):
            continue
        wanted = [p for p in paths if p.extension == extension and p.name == lowered]
        if not wanted:
            continue
        subs = [p.sub for p in wanted]
        if None in subs or not isinstance(value, dict | list):
            picked[key] = value
        elif isinstance(value, dict):
            picked[key] = {k: v for k, v in value.items() if k.lower() in subs}
        else:
            picked[key] = [{k: v for k, v in e.items() if k.lower() in subs} for e in value if isinstance(e, dict)]
    return picked


def _drop(source: dict[str, Any], paths: list[AttrPath], extension: str | None) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in source.items():
        lowered = key.lower()
        dropped = [p for p in paths if p.extension == extension and p.name == lowered]
        if not dropped or (extension is None and lowered in ALWAYS):
            kept[key] = value
            continue
        subs = {p.sub for p in dropped}
        if None in subs:
            continue
        if isinstance(value, dict):
            kept[key] = {k: v for k, v in value.items() if k.lower() not in subs}
        elif isinstance(value, list):
            kept[key] = [{k: v for k, v in e.items() if k.lower() not in subs} for e in value if isinstance(e, dict)]
        else:
            kept[key] = value
    return kept


def project(
    resource: dict[str, Any], attributes: list[AttrPath] | None, excluded: list[AttrPath] | None
) -> dict[str, Any]:
    """The resource as the client asked to see it."""
    if attributes:
        whole_extension = any(p.extension is None and p.name == ENTERPRISE.lower() for p in attributes)
        out = {k: v for k, v in resource.items() if k.lower() in ALWAYS}
        out.update(_pick(resource, attributes, None))
        extension = resource.get(ENTERPRISE)
        if isinstance(extension, dict):
            chosen = extension if whole_extension else _pick(extension, attributes, ENTERPRISE)
            if chosen:
                out[ENTERPRISE] = chosen
        return out
    if excluded:
        out = _drop(resource, excluded, None)
        if any(p.extension is None and p.name == ENTERPRISE.lower() for p in excluded):
            out.pop(ENTERPRISE, None)
        elif isinstance(out.get(ENTERPRISE), dict):
            out[ENTERPRISE] = _drop(out[ENTERPRISE], excluded, ENTERPRISE)
        return out
    return resource


def ldap_attributes_for(paths: list[AttrPath] | None, excluded: list[AttrPath] | None) -> set[str] | None:
    """Top-level SCIM attribute names (lower-case) a projection needs; None means all."""
    if not paths:
        return None
    names = {p.name for p in paths if p.extension is None} | {"id"}
    names.update(f"enterprise:{p.name}" for p in paths if p.extension == ENTERPRISE)
    if any(p.name == ENTERPRISE.lower() for p in paths):
        names.add("enterprise:*")
    return names
