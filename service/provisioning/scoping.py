"""Scoping: which source objects a job provisions, with the reasons (on-demand provisioning prints them).

``Scope(settings).decide(resource, membership) -> ScopeDecision(in_scope, reasons)``. An object is in
scope when every configured rule holds:

- ``base_dns``: its DN (``distinguishedName`` of the read-only extension
  ``urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry``) is one of them or under one;
- ``groups``: it is a member of one of these groups (by SCIM id or displayName), directly or, with
  ``nested``, through groups in groups; the scoping groups themselves are in scope unless
  ``include_scoping_groups`` is false. The engine builds a ``MembershipIndex`` from the groups it read
  (``MembershipIndex.from_groups``) and passes it to ``decide``;
- ``conditions`` (Users) / ``group_conditions`` (Groups): SCIM filters (``protocol.scimeval``), all must hold.

Settings: ``ScopeSettings`` (a job's ``scoping`` section); ``out_of_scope`` says what the engine does
with an object that leaves scope (``disable`` or ``delete``).

Guarantees: pure; DNs compare as LDAP does for the usual syntaxes (attribute types case-insensitive,
values case-folded with insignificant spaces ignored, RFC 4514 escapes such as ``\\,`` and ``\\2C``
decoded, multi-valued RDNs order-free). Membership lookups visit each group once, so cycles are safe.
A scope that needs membership refuses to decide without an index rather than put everything out of scope.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.errors import ScimError
from protocol.scimeval import check, get_ci, matches
from protocol.scimfilter import Filter, parse_filter

__all__ = ["MembershipIndex", "Scope", "ScopeDecision", "ScopeError", "ScopeSettings", "dn_key", "is_at_or_under"]

LDAP_ENTRY = "urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"

DNKey = tuple[tuple[tuple[str, str], ...], ...]


class ScopeError(ValueError):
    """A scope cannot decide (e.g. group scoping without a membership index)."""


# ---------------------------------------------------------------------------------------------- DNs

_TYPE_ALIASES = {
    "2.5.4.3": "cn",
    "2.5.4.6": "c",
    "2.5.4.7": "l",
    "2.5.4.8": "st",
    "2.5.4.10": "o",
    "2.5.4.11": "ou",
    "0.9.2342.19200300.100.1.1": "uid",
    "0.9.2342.19200300.100.1.25": "dc",
}
_HEX = frozenset("0123456789abcdefABCDEF")


def _value(dn: str, i: int) -> tuple[str, int]:
    """The value starting at ``i``, unescaped and normalised, and the offset of its terminator."""
    end = len(dn)
    while i < end and dn[i] == " ":
        i += 1
    if i < end and dn[i] == "#":  # BER-encoded value: compared as its hex text
        j = i + 1
        while j < end and dn[j] in _HEX:
            j += 1
        return dn[i:j].lower(), j
    out = bytearray()
    quoted = i < end and dn[i] == '"'
    i += quoted
    while i < end:
        char = dn[i]
        if quoted and char == '"':
            i += 1
            break
        if not quoted and char in ",;+":
            break
        if char == "\\":
            pair = dn[i + 1 : i + 3]
            if len(pair) == 2 and all(c in _HEX for c in pair):
                out.append(int(pair, 16))
                i += 3
            elif i + 1 < end:
                out.extend(dn[i + 1].encode())
                i += 2
            else:
                raise ValueError(f"invalid DN {dn!r}: a '\\' at offset {i} escapes nothing")
            continue
        out.extend(char.encode())
        i += 1
    else:
        if quoted:
            raise ValueError(f"invalid DN {dn!r}: unterminated quoted value")
    try:
        text = out.decode()
    except UnicodeDecodeError:
        raise ValueError(f"invalid DN {dn!r}: escaped bytes are not UTF-8") from None
    while i < end and dn[i] == " ":
        i += 1
    return " ".join(text.casefold().split()), i


@lru_cache(maxsize=4096)
def dn_key(dn: str) -> DNKey:
    """A comparable form of ``dn``: RDNs leaf first, each a sorted tuple of (type, normalised value).

    Raises ``ValueError`` naming the offset for text that is not a DN; an empty DN is ``()``.
    """
    end = len(dn)
    if not dn.strip():
        return ()
    rdns: list[tuple[tuple[str, str], ...]] = []
    avas: list[tuple[str, str]] = []
    i = 0
    while True:
        eq = dn.find("=", i)
        if eq < 0:
            raise ValueError(f"invalid DN {dn!r}: expected 'type=value' at offset {i}")
        attribute = dn[i:eq].strip().lower()
        if not attribute or not all(c.isalnum() or c in "-." for c in attribute):
            raise ValueError(f"invalid DN {dn!r}: bad attribute type {dn[i:eq].strip()!r} at offset {i}")
        value, i = _value(dn, eq + 1)
        avas.append((_TYPE_ALIASES.get(attribute, attribute), value))
        if i >= end:
            rdns.append(tuple(sorted(avas)))
            return tuple(rdns)
        if dn[i] in ",;":
            rdns.append(tuple(sorted(avas)))
            avas = []
        i += 1


def is_at_or_under(dn: DNKey, base: DNKey) -> bool:
    """Whether ``dn`` is ``base`` or a descendant of it."""
    return len(dn) >= len(base) and dn[len(dn) - len(base) :] == base


# ---------------------------------------------------------------------------------------- membership


class MembershipIndex:
    """Group → members and member → groups, from the groups the engine read (ids are SCIM ids)."""

    __slots__ = ("_members", "_names", "_parents")

    def __init__(self) -> None:
        self._members: dict[str, frozenset[str]] = {}
        self._parents: dict[str, set[str]] = {}
        self._names: dict[str, str] = {}

    @classmethod
    def from_groups(cls, groups: Iterable[Mapping[str, Any]]) -> Self:
        """An index of SCIM Group resources (``id``, ``displayName``, ``members[].value``)."""
        index = cls()
        for group in groups:
            members = get_ci(group, "members") or []
            ids = [m.get("value") if isinstance(m, Mapping) else m for m in members]
            index.add_group(str(group["id"]), [i for i in ids if isinstance(i, str)], get_ci(group, "displayName"))
        return index

    def add_group(self, group_id: str, member_ids: Iterable[str], display_name: str | None = None) -> None:
        """Record a group and its direct members (users or groups); a second call replaces the first."""
        for old in self._members.get(group_id, ()):
            self._parents.get(old, set()).discard(group_id)
        members = frozenset(member_ids)
        self._members[group_id] = members
        for member in members:
            self._parents.setdefault(member, set()).add(group_id)
        if display_name:
            self._names[group_id] = display_name

    def name(self, group_id: str) -> str:
        """The group's displayName, or its id."""
        return self._names.get(group_id, group_id)

    def resolve(self, groups: Iterable[str]) -> set[str]:
        """Group ids for ids or displayNames (case-insensitive); unknown names resolve to nothing."""
        wanted = set(groups)
        by_name = {n.casefold() for n in wanted}
        found = {g for g in self._members if g in wanted}
        found.update(g for g, n in self._names.items() if n.casefold() in by_name)
        return found

    def is_member(self, object_id: str, group_ids: Iterable[str], nested: bool = True) -> bool:
        """Whether ``object_id`` is in one of ``group_ids`` (ids or names), directly or (``nested``) through groups."""
        return self.path(object_id, group_ids, nested) is not None

    def path(self, object_id: str, group_ids: Iterable[str], nested: bool = True) -> list[str] | None:
        """The groups from ``object_id``'s direct group up to a wanted one (shortest), or None."""
        targets = self.resolve(group_ids)
        came_from: dict[str, str | None] = dict.fromkeys(self._parents.get(object_id, ()))
        queue = deque(sorted(came_from))
        while queue:
            group = queue.popleft()
            if group in targets:
                chain = [group]
                while (previous := came_from[chain[-1]]) is not None:
                    chain.append(previous)
                return chain[::-1]
            if not nested:
                continue
            for parent in sorted(self._parents.get(group, ())):
                if parent not in came_from:  # each group once: cycles end here
                    came_from[parent] = group
                    queue.append(parent)
        return None


# ------------------------------------------------------------------------------------------ settings


def _check_filter(text: str) -> str:
    try:
        check(parse_filter(text))
    except ScimError as exc:
        raise ValueError(f"{text!r}: {exc.detail}") from None
    return text


class ScopeSettings(BaseModel):
    """A job's scoping rules; with none set every object is in scope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_dns: list[str] = Field(
        default_factory=list, description="The object's DN must be one of these or under one (none: any DN)."
    )
    groups: list[str] = Field(
        default_factory=list, description="The object must be a member of one of these groups (SCIM id or displayName)."
    )
    nested: bool = Field(default=True, description="Group membership counts through nested groups.")
    include_scoping_groups: bool = Field(default=True, description="The groups in `groups` are in scope themselves.")
    conditions: list[str] = Field(
        default_factory=list, description='SCIM filters every User must satisfy, e.g. userType eq "Employee".'
    )
    group_conditions: list[str] = Field(default_factory=list, description="SCIM filters every Group must satisfy.")
    out_of_scope: Literal["disable", "delete"] = Field(
        default="disable", description="What happens in the target to an object leaving scope."
    )

    @field_validator("base_dns")
    @classmethod
    def _dns(cls, values: list[str]) -> list[str]:
        for value in values:
            if not dn_key(value):
                raise ValueError("a base DN must not be empty")
        return values

    @field_validator("conditions", "group_conditions")
    @classmethod
    def _filters(cls, values: list[str]) -> list[str]:
        return [_check_filter(v) for v in values]


# ------------------------------------------------------------------------------------------- decide


@dataclass(frozen=True, slots=True)
class ScopeDecision:
    """Whether an object is in scope, and why (one reason per rule checked)."""

    in_scope: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def _resource_type(resource: Mapping[str, Any]) -> str:
    meta = get_ci(resource, "meta")
    kind = get_ci(meta, "resourceType") if isinstance(meta, Mapping) else None
    if isinstance(kind, str):
        return kind
    schemas = get_ci(resource, "schemas") or []
    return "Group" if any(isinstance(s, str) and s.lower() == CORE_GROUP.lower() for s in schemas) else "User"


def _dn_of(resource: Mapping[str, Any]) -> str | None:
    entry = get_ci(resource, LDAP_ENTRY)
    value = get_ci(entry, "distinguishedName") if isinstance(entry, Mapping) else None
    return value if isinstance(value, str) and value else None


class Scope:
    """Compiled ``ScopeSettings``: DNs parsed and filters compiled once."""

    __slots__ = ("_base_dns", "_conditions", "settings")

    def __init__(self, settings: ScopeSettings | None = None) -> None:
        self.settings = settings or ScopeSettings()
        self._base_dns = [(dn, dn_key(dn)) for dn in self.settings.base_dns]
        self._conditions: dict[str, list[tuple[str, Filter]]] = {
            "User": [(t, parse_filter(t)) for t in self.settings.conditions],
            "Group": [(t, parse_filter(t)) for t in self.settings.group_conditions],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Self:
        """A scope from a job's ``scoping`` section (pydantic ``ValidationError`` names a bad key)."""
        return cls(ScopeSettings.model_validate(config or {}))

    @property
    def uses_membership(self) -> bool:
        """Whether decisions depend on group membership (the engine must pass a ``MembershipIndex``)."""
        return bool(self.settings.groups)

    def decide(self, resource: Mapping[str, Any], membership: MembershipIndex | None = None) -> ScopeDecision:
        """Whether ``resource`` (a source SCIM resource) is in scope, with a reason per rule."""
        checks: list[tuple[bool, str]] = []
        if self._base_dns:
            checks.append(self._check_dn(resource))
        if self.settings.groups:
            if membership is None:
                raise ScopeError("scoping by group needs the membership index of the source groups")
            checks.append(self._check_groups(resource, membership))
        kind = _resource_type(resource)
        for text, condition in self._conditions.get(kind, []):
            try:
                holds = matches(condition, resource)
            except ScimError as exc:
                checks.append((False, f"condition {text!r} cannot apply: {exc.detail}"))
                continue
            checks.append((holds, f"condition {text!r} {'holds' if holds else 'does not hold'}"))
        if not checks:
            return ScopeDecision(True, ["no scoping rules: every object is in scope"])
        return ScopeDecision(all(ok for ok, _ in checks), [reason for _, reason in checks])

    def _check_dn(self, resource: Mapping[str, Any]) -> tuple[bool, str]:
        dn = _dn_of(resource)
        if dn is None:
            return False, f"has no distinguishedName ({LDAP_ENTRY}), so it is under no base DN"
        try:
            key = dn_key(dn)
        except ValueError as exc:
            return False, str(exc)
        for text, base in self._base_dns:
            if is_at_or_under(key, base):
                return True, f"DN {dn!r} is under base DN {text!r}"
        return False, f"DN {dn!r} is under none of the base DNs ({'; '.join(t for t, _ in self._base_dns)})"

    def _check_groups(self, resource: Mapping[str, Any], membership: MembershipIndex) -> tuple[bool, str]:
        object_id = str(get_ci(resource, "id") or "")
        groups: Sequence[str] = self.settings.groups
        if self.settings.include_scoping_groups and object_id in membership.resolve(groups):
            return True, f"is the scoping group {membership.name(object_id)!r}"
        chain = membership.path(object_id, groups, self.settings.nested)
        if chain is None:
            how = "directly or through nested groups" if self.settings.nested else "directly"
            return False, f"is a member of none of the scoping groups ({', '.join(groups)}) {how}"
        names = [repr(membership.name(g)) for g in chain]
        if len(names) == 1:
            return True, f"is a member of {names[0]}"
        return True, f"is a member of {names[-1]} through {' → '.join(names[:-1])}"
