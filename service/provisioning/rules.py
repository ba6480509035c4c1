"""The engine's view of mapping and scoping: ``Rules`` (a mapper per resource type and a scope).

What it is
    ``Mapper`` (``map(source) -> dict`` of target attribute path → value) and ``ScopeRule``
    (``decide(resource, membership)``) are the seams the mapping and scoping modules fill.
    ``default_rules()`` is what a job without mapping or scoping configuration gets: the usual
    user and group attributes copied as they are, and every object in scope.

Guarantees
    ``decision(...)`` reads whatever a scope returns (a bool, ``(bool, reason)``, or an object with
    ``in_scope``/``reason``) as ``(in_scope, reason)``; a mapper's ``None`` means "clear it".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LDAP_ENTRY = "urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry"


class Mapper(Protocol):
    def map(self, source: Mapping[str, Any], *, creating: bool = True) -> dict[str, Any]: ...


class ScopeRule(Protocol):
    def decide(self, resource: Mapping[str, Any], membership: Any) -> Any: ...


def dn_of(resource: Mapping[str, Any]) -> str | None:
    entry = resource.get(LDAP_ENTRY)
    return str(entry["distinguishedName"]) if isinstance(entry, Mapping) and "distinguishedName" in entry else None


def _sub(source: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = source.get(key)
    return value if isinstance(value, Mapping) else {}


def _typed(values: Any, kind: str) -> Any:
    if not isinstance(values, list):
        return None
    for value in values:
        if isinstance(value, Mapping) and value.get("type") == kind:
            return value.get("value")
    return None


@dataclass(frozen=True)
class CopyMapper:
    """The default mapping: the common attributes of a resource type, copied unchanged."""

    resource_type: str

    def map(self, source: Mapping[str, Any], *, creating: bool = True) -> dict[str, Any]:
        if self.resource_type == "Group":
            return {"displayName": source.get("displayName")}
        name = _sub(source, "name")
        enterprise = _sub(source, ENTERPRISE)
        return {
            "userName": source.get("userName"),
            "displayName": source.get("displayName"),
            "name.givenName": name.get("givenName"),
            "name.familyName": name.get("familyName"),
            "title": source.get("title"),
            "active": bool(source.get("active", True)),
            'emails[type eq "work"].value': _typed(source.get("emails"), "work"),
            'phoneNumbers[type eq "work"].value': _typed(source.get("phoneNumbers"), "work"),
            f"{ENTERPRISE}:employeeNumber": enterprise.get("employeeNumber"),
            f"{ENTERPRISE}:department": enterprise.get("department"),
        }


class EverythingInScope:
    def decide(self, resource: Mapping[str, Any], membership: Any) -> tuple[bool, str]:
        return True, "no scoping rules: every object is in scope"


@dataclass
class Rules:
    mappers: Mapping[str, Mapper] = field(
        default_factory=lambda: {"User": CopyMapper("User"), "Group": CopyMapper("Group")}
    )
    scope: ScopeRule = field(default_factory=EverythingInScope)
    #: The scope looks at group membership: a changed group may move users in or out of scope.
    uses_membership: bool = False
    #: Builds the membership index from the source groups (None: no index needed).
    membership_factory: Any = None

    def membership(self, groups: Sequence[Mapping[str, Any]]) -> Any:
        return self.membership_factory(groups) if self.membership_factory is not None else None


def default_rules() -> Rules:
    return Rules()


def decision(result: Any) -> tuple[bool, str]:
    """``(in_scope, reason)`` from whatever a scope's ``decide`` returned."""
    if isinstance(result, bool):
        return result, "in scope" if result else "out of scope"
    if isinstance(result, tuple) and len(result) == 2:
        return bool(result[0]), str(result[1])
    in_scope = getattr(result, "in_scope", None)
    if in_scope is None:
        in_scope = getattr(result, "included", None)
    if in_scope is None:
        in_scope = bool(result)
    reason = (
        getattr(result, "reason", None)
        or getattr(result, "reasons", None)
        or ("in scope" if in_scope else "out of scope")
    )
    if isinstance(reason, list | tuple):
        reason = "; ".join(str(r) for r in reason)
    return bool(in_scope), str(reason)


def rules_from_settings(settings: Any) -> Rules:
    """The rules of a job's settings: ``mapping`` through ``mappings_from_config``, ``scoping`` through ``Scope``.

    A scope that looks at group membership gets the ``MembershipIndex`` of the source groups.
    """
    from service.provisioning.mapping import mappings_from_config
    from service.provisioning.scoping import MembershipIndex, Scope

    scope = Scope.from_config(settings.scoping or None)
    return Rules(
        mappers=mappings_from_config(settings.mapping or None),
        scope=scope,
        uses_membership=scope.uses_membership,
        membership_factory=MembershipIndex.from_groups if scope.uses_membership else None,
    )
