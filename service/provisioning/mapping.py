"""Attribute mapping: source SCIM resource → target attributes, one ``AttributeMapping`` per target attribute.

API (stable, used by the engine):

- ``ResourceMapper(mappings).map(source, *, creating=True) -> dict[str, Any]``: the target attributes,
  keyed by target SCIM path (``userName``, ``name.givenName``, ``emails[type eq "work"].value``,
  ``urn:…:enterprise:2.0:User:department``; see ``targets.base``). A value of ``None`` means "no value"
  (an update clears it). ``apply: on_create`` mappings are left out when ``creating`` is false.
- ``mappings_from_config(config) -> dict[resource_type, ResourceMapper]``: always has ``"User"`` and
  ``"Group"``; a type missing from ``config`` gets ``DEFAULT_MAPPINGS`` (so a job works with no mapping
  configuration). Every expression is parsed here; a bad one raises ``MappingConfigError`` naming the
  key (``User.attributes[2].expression``) and the character offset.

Settings (a job's ``mapping`` section, per resource type)::

    User:
      defaults: true            # start from DEFAULT_MAPPINGS (default); false: only what is listed
      remove: [title]           # default mappings to drop, by target path
      attributes:               # added, or replacing the default of the same target (case-insensitive)
        - {target: displayName, expression: 'Join(" ", [givenName], [sn])'}
        - {target: userName, source: userName}          # a SCIM path on the source
        - {target: active, constant: true, apply: on_create}
        - {target: proxyAddresses, expression: 'Split([x], ";")', multi_valued: true}
      # or, shorter: attributes: {displayName: 'Join(" ", [givenName], [sn])'}

Guarantees: pure; a single-valued mapping turns a list result into its first value and a
multi-valued one always yields a list (``[]`` for null). Evaluation failures raise ``MappingError``
naming the target attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocol.errors import ScimError
from protocol.scimfilter import parse_path
from service.provisioning.expressions import (
    ENTERPRISE,
    Expression,
    ExpressionError,
    ExpressionEvaluationError,
    parse_expression,
)

__all__ = [
    "DEFAULT_MAPPINGS",
    "AttributeMapping",
    "AttributeMappingSettings",
    "MappingConfigError",
    "MappingError",
    "ResourceMapper",
    "ResourceMappingSettings",
    "default_mappers",
    "mappings_from_config",
]

Apply = Literal["always", "on_create"]
RESOURCE_TYPES: tuple[str, ...] = ("User", "Group")


class MappingConfigError(ValueError):
    """The mapping configuration is invalid; the message names the key and, for expressions, the offset."""


class MappingError(ValueError):
    """A mapping could not be evaluated on a source resource; ``target`` names the attribute."""

    def __init__(self, target: str, cause: ExpressionError) -> None:
        super().__init__(f"{target}: {cause}")
        self.target = target
        self.cause = cause


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(value: str | int | float | bool | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    return repr(value)


@dataclass(frozen=True, slots=True)
class AttributeMapping:
    """One target attribute and the expression computing it from the source."""

    target: str
    expression: Expression
    apply: Apply = "always"
    multi_valued: bool = False

    def __post_init__(self) -> None:
        try:
            parse_path(self.target)
        except ScimError as exc:
            raise ValueError(f"target {self.target!r} is not a SCIM attribute path: {exc.detail}") from None

    @classmethod
    def from_expression(cls, target: str, text: str, apply: Apply = "always", *, multi_valued: bool = False) -> Self:
        """Map ``target`` from an expression (``ExpressionError`` if it is invalid)."""
        return cls(target, parse_expression(text), apply, multi_valued)

    @classmethod
    def from_source(cls, target: str, path: str, apply: Apply = "always", *, multi_valued: bool = False) -> Self:
        """Copy the source attribute at SCIM ``path`` (``[path]``)."""
        return cls(target, parse_expression(f"[{path}]"), apply, multi_valued)

    @classmethod
    def constant(cls, target: str, value: str | int | float | bool | None, apply: Apply = "always") -> Self:
        """Set ``target`` to a constant."""
        return cls(target, parse_expression(_literal(value)), apply)

    def value(self, source: Mapping[str, Any]) -> Any:
        """The target value for ``source`` (raises ``MappingError``)."""
        try:
            result = self.expression.evaluate(source)
        except ExpressionEvaluationError as exc:
            raise MappingError(self.target, exc) from None
        if self.multi_valued:
            if result is None:
                return []
            return list(result) if isinstance(result, list) else [result]
        if isinstance(result, list):
            return result[0] if result else None
        return result


class ResourceMapper:
    """The mappings of one resource type; ``map(source)`` gives the target attributes."""

    __slots__ = ("mappings",)

    def __init__(self, mappings: Iterable[AttributeMapping]) -> None:
        by_target: dict[str, AttributeMapping] = {}
        for mapping in mappings:
            by_target[mapping.target.lower()] = mapping  # a later mapping of the same target replaces
        self.mappings: tuple[AttributeMapping, ...] = tuple(by_target.values())

    def map(self, source: Mapping[str, Any], *, creating: bool = True) -> dict[str, Any]:
        """Target attributes for ``source``; ``on_create`` mappings only when ``creating``."""
        return {m.target: m.value(source) for m in self.mappings if creating or m.apply == "always"}

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(m.target for m in self.mappings)

    def __repr__(self) -> str:
        return f"ResourceMapper({', '.join(self.targets)})"


def _defaults() -> dict[str, tuple[AttributeMapping, ...]]:
    source, expression = AttributeMapping.from_source, AttributeMapping.from_expression
    work_email = 'emails[type eq "work"].value'
    return {
        "User": (
            source("userName", "userName"),
            source("displayName", "displayName"),
            source("name.givenName", "name.givenName"),
            source("name.familyName", "name.familyName"),
            source("name.formatted", "name.formatted"),
            source("title", "title"),
            expression("active", "Coalesce([active], true)"),
            source(work_email, work_email),
            source('phoneNumbers[type eq "work"].value', 'phoneNumbers[type eq "work"].value'),
            source('phoneNumbers[type eq "mobile"].value', 'phoneNumbers[type eq "mobile"].value'),
            source(f"{ENTERPRISE}:employeeNumber", f"{ENTERPRISE}:employeeNumber"),
            source(f"{ENTERPRISE}:department", f"{ENTERPRISE}:department"),
            source(f"{ENTERPRISE}:organization", f"{ENTERPRISE}:organization"),
        ),
        "Group": (source("displayName", "displayName"),),
    }


#: What a job maps with no mapping configuration (membership and manager are the engine's: they need target ids).
DEFAULT_MAPPINGS: dict[str, tuple[AttributeMapping, ...]] = _defaults()


def default_mappers() -> dict[str, ResourceMapper]:
    """A ``ResourceMapper`` per resource type with ``DEFAULT_MAPPINGS``."""
    return {name: ResourceMapper(mappings) for name, mappings in DEFAULT_MAPPINGS.items()}


# ------------------------------------------------------------------------------------------- config


class AttributeMappingSettings(BaseModel):
    """One mapping in configuration: exactly one of ``expression``, ``source`` and ``constant``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(description="Target attribute, a SCIM path (userName, name.givenName, urn:…:department).")
    expression: str | None = Field(default=None, description='An expression: Join(" ", [givenName], [sn]).')
    source: str | None = Field(default=None, description="A source SCIM attribute path copied as it is.")
    constant: str | int | float | bool | None = Field(default=None, description="A constant value.")
    apply: Apply = Field(default="always", description="always, or on_create: only when the object is created.")
    multi_valued: bool = Field(default=False, description="The target takes a list (else the first value).")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [k for k in ("expression", "source", "constant") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"give exactly one of expression, source and constant (got {', '.join(given) or 'none'})")
        return self


class ResourceMappingSettings(BaseModel):
    """The mapping of one resource type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: bool = Field(default=True, description="Start from the default mappings of the type.")
    remove: list[str] = Field(default_factory=list, description="Default mappings to drop, by target path.")
    attributes: list[AttributeMappingSettings] = Field(
        default_factory=list, description="Mappings added, or replacing the default of the same target."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``attributes: {target: expression | {settings}}`` is the same as the list form."""
        if isinstance(data, Mapping) and isinstance(data.get("attributes"), Mapping):
            items = []
            for target, spec in data["attributes"].items():
                items.append(
                    {"target": target, **spec} if isinstance(spec, Mapping) else {"target": target, "expression": spec}
                )
            data = {**data, "attributes": items}
        return data


def _build(resource_type: str, settings: ResourceMappingSettings) -> ResourceMapper:
    mappings: list[AttributeMapping] = []
    if settings.defaults:
        removed = {r.lower() for r in settings.remove}
        known = {m.target.lower() for m in DEFAULT_MAPPINGS.get(resource_type, ())}
        for name in settings.remove:
            if name.lower() not in known:
                raise MappingConfigError(
                    f"{resource_type}.remove: {name!r} is not a default mapping of {resource_type}"
                )
        mappings.extend(m for m in DEFAULT_MAPPINGS.get(resource_type, ()) if m.target.lower() not in removed)
    elif settings.remove:
        raise MappingConfigError(f"{resource_type}.remove: only meaningful with defaults: true")
    for index, item in enumerate(settings.attributes):
        key = f"{resource_type}.attributes[{index}]"
        try:
            parse_path(item.target)
        except ScimError as exc:
            raise MappingConfigError(
                f"{key}.target: {item.target!r} is not a SCIM attribute path ({exc.detail})"
            ) from None
        field, text = "expression", item.expression
        if "source" in item.model_fields_set:
            field, text = "source", f"[{item.source}]"
        elif "constant" in item.model_fields_set:
            field, text = "constant", _literal(item.constant)
        try:
            expression = parse_expression(text or "")
        except ExpressionError as exc:
            if field == "source":  # offsets count from the path, not the "[" we added
                raise MappingConfigError(f"{key}.source: {item.source!r}: {exc.reason}") from None
            raise MappingConfigError(f"{key}.{field}: {exc}") from None
        mappings.append(AttributeMapping(item.target, expression, item.apply, item.multi_valued))
    return ResourceMapper(mappings)


def _loc(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def mappings_from_config(config: Mapping[str, Any] | None) -> dict[str, ResourceMapper]:
    """A ``ResourceMapper`` per resource type from a job's ``mapping`` section (see the module docstring)."""
    config = config or {}
    canonical = {name.lower(): name for name in RESOURCE_TYPES}
    mappers = default_mappers()
    for key, section in config.items():
        resource_type = canonical.get(str(key).lower())
        if resource_type is None:
            raise MappingConfigError(f"{key}: unknown resource type (expected one of {', '.join(RESOURCE_TYPES)})")
        try:
            settings = ResourceMappingSettings.model_validate(section or {})
        except ValidationError as exc:
            problems = "; ".join(f"{resource_type}.{_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
            raise MappingConfigError(problems) from None
        mappers[resource_type] = _build(resource_type, settings)
    return mappers
