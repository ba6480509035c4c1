"""Matching source objects to target objects: the anchor, and an optional matching attribute for first sync.

``match_anchor(resource)`` is the anchor a target keeps with the object it provisioned from
``resource``: the source SCIM ``id`` (objectGUID or entryUUID, by profile) unless ``MatchSettings.anchor``
names ``externalId`` or another SCIM attribute path. ``Matcher(settings).matching_value(resource)``
is the value to look up with ``Target.find_by_attribute(type, settings.target_attribute, value)`` when no
object carries the anchor yet (first sync into a populated target).

Settings: ``MatchSettings`` (``anchor``, ``target_attribute``, ``source_expression``; the expression
defaults to ``[target_attribute]`` and is parsed at load, errors naming its offset).

Guarantees: pure; an anchor is always a non-empty string (``MatchError`` otherwise), and a missing
or empty matching value is ``None`` (never match on nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.errors import ScimError
from protocol.scimeval import is_present
from protocol.scimfilter import PatchPath, parse_path
from service.provisioning.expressions import Expression, ExpressionError, parse_expression, resolve_path

__all__ = ["MatchError", "MatchSettings", "Matcher", "match_anchor"]


class MatchError(ValueError):
    """A source resource has no usable anchor."""


class MatchSettings(BaseModel):
    """How source objects find their target objects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    anchor: str = Field(default="id", description="Source attribute path that anchors an object: id, externalId, …")
    target_attribute: str | None = Field(
        default=None, description="Target attribute matching an unanchored object on first sync (e.g. userName)."
    )
    source_expression: str | None = Field(
        default=None, description="Expression giving the value to match (default: [target_attribute] of the source)."
    )

    @field_validator("anchor", "target_attribute")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_path(value)
            except ScimError as exc:
                raise ValueError(f"{value!r} is not a SCIM attribute path: {exc.detail}") from None
        return value

    @field_validator("source_expression")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_expression(value)
            except ExpressionError as exc:
                raise ValueError(f"invalid expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if self.source_expression is not None and self.target_attribute is None:
            raise ValueError("source_expression needs target_attribute (the target attribute to compare it with)")
        return self


def _anchor_of(resource: Mapping[str, Any], path: PatchPath) -> str:
    values = resolve_path(resource, path)
    value = values[0] if values else None
    if isinstance(value, Mapping):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise MatchError(f"the source object has no {path.to_string()} to anchor it (got {value!r})")
    return str(value)


def match_anchor(resource: Mapping[str, Any], anchor: str = "id") -> str:
    """The anchor of a source resource: its ``anchor`` attribute (default the SCIM ``id``) as text."""
    try:
        path = parse_path(anchor)
    except ScimError as exc:
        raise MatchError(f"{anchor!r} is not a SCIM attribute path: {exc.detail}") from None
    return _anchor_of(resource, path)


class Matcher:
    """Compiled ``MatchSettings``."""

    __slots__ = ("_anchor", "_expression", "settings")

    def __init__(self, settings: MatchSettings | None = None) -> None:
        self.settings = settings or MatchSettings()
        self._anchor = parse_path(self.settings.anchor)
        self._expression: Expression | None = None
        if self.settings.target_attribute is not None:
            text = self.settings.source_expression or f"[{self.settings.target_attribute}]"
            self._expression = parse_expression(text)

    def anchor(self, resource: Mapping[str, Any]) -> str:
        """The anchor of ``resource`` (``MatchError`` if it has none)."""
        return _anchor_of(resource, self._anchor)

    @property
    def target_attribute(self) -> str | None:
        return self.settings.target_attribute

    def matching_value(self, resource: Mapping[str, Any]) -> Any:
        """The value to find an unanchored target object by, or None (no matching configured or no value)."""
        if self._expression is None:
            return None
        value = self._expression.evaluate(resource)
        if isinstance(value, list):
            value = value[0] if value else None
        return value if is_present(value) else None
