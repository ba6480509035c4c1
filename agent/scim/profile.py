"""SCIM ↔ LDAP mapping profiles: which LDAP attribute holds each SCIM attribute, and how to convert.

A ``Profile`` has one ``ResourceMapping`` per SCIM resource type (User, Group). Each ``AttrMap``
names a SCIM attribute with a compact path and the LDAP attribute behind it:

- ``userName``, ``displayName``: a simple attribute;
- ``name.givenName``: a sub-attribute of a complex attribute;
- ``emails[work]``: the ``value`` of the elements of a multi-valued attribute whose ``type`` is work;
- ``enterprise:department``: an attribute of the enterprise extension
  (``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User``).

Built-in profiles: ``openldap`` (inetOrgPerson / groupOfNames, ``id`` ← entryUUID; an empty group
holds the empty DN as its one ``member``, as groupOfNames requires a member) and ``ad`` (user / group
in ``cn=Users``, ``id`` ← objectGUID, ``externalId`` ← ms-DS-ConsistencyGuid when set else objectGUID,
``userName`` ← userPrincipalName, a unique ``sAMAccountName`` derived on create, ``manager`` DN ↔ id).
``scim.profile_overrides`` in config changes mappings:
``{"User": {"userName": "sAMAccountName", "title": null}}`` (null removes a mapping; with that one,
userName is the sAMAccountName and none is derived).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
#: Read-only extension every resource carries: where it lives in the directory (scoping by OU needs it).
LDAP_ENTRY = "urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry"


class Kind(enum.Enum):
    """How LDAP values convert to SCIM values and back."""

    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"  # LDAP TRUE/FALSE
    REFERENCE = "reference"  # an LDAP DN ↔ a SCIM {"value": id} of another resource
    TIMESTAMP = "timestamp"  # generalized time ↔ ISO 8601 dateTime (read-only)
    ACTIVE_UAC = "active_uac"  # AD userAccountControl bit 2 (ACCOUNTDISABLE) ↔ active
    GUID = "guid"  # 16 bytes in GUID layout (AD octet strings) ↔ the GUID's string form


@dataclass(frozen=True, slots=True)
class AttrMap:
    """One SCIM attribute (``path`` in the compact notation above) held in LDAP attribute ``ldap``."""

    path: str
    ldap: str
    kind: Kind = Kind.STRING
    read_only: bool = False
    #: Read when ``ldap`` has no value (AD: externalId is ms-DS-ConsistencyGuid, else objectGUID). An
    #: absent SCIM value then keeps ``ldap`` as it is, and a value equal to the fallback is not written.
    fallback: str | None = None
    #: (attribute, sub-attribute, type) of the path: ``emails[work]`` → ("emails", "value", "work").
    parts: tuple[str, str | None, str | None] = field(init=False, repr=False, compare=False)
    extension: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path = self.path.removeprefix("enterprise:")
        if path.endswith("]"):
            name, _, kind = path[:-1].partition("[")
            parts: tuple[str, str | None, str | None] = (name, "value", kind)
        else:
            name, _, sub = path.partition(".")
            parts = (name, sub or None, None)
        object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "extension", self.path.startswith("enterprise:"))


class Shape(enum.Enum):
    """Where an attribute's LDAP values go in the SCIM resource a read builds."""

    SIMPLE = "simple"  # resource[name] = the first value
    SUB = "sub"  # resource[name][sub] = the first value
    TYPED = "typed"  # resource[name] gets {"value": v, "type": type} for every value
    REFERENCE = "reference"  # resolved DNs: every one for members, else the first
    META = "meta"  # meta[sub] = the first value


class ReadStep(NamedTuple):
    """One mapping as a read applies it, worked out once per mapping (a full read applies it per entry).

    ``ldap`` and ``fallback`` are lower case, as ``Attributes.values_lower`` takes them."""

    ldap: str
    fallback: str | None
    shape: Shape
    name: str
    sub: str | None
    type: str | None
    kind: Kind
    extension: bool


def read_step(attr: AttrMap) -> ReadStep:
    name, sub, kind = attr.parts
    if name == "meta" and sub:
        shape = Shape.META
    elif attr.kind is Kind.REFERENCE:
        shape = Shape.REFERENCE
    elif kind is not None:
        shape = Shape.TYPED
    elif sub is not None:
        shape = Shape.SUB
    else:
        shape = Shape.SIMPLE
    fallback = attr.fallback.lower() if attr.fallback else None
    return ReadStep(attr.ldap.lower(), fallback, shape, name, sub, kind, attr.kind, attr.extension)


#: A ``ReadStep`` as a plain tuple, as ``ResourceMapping.read_plan`` holds it: CPython 3.11 unpacks an exact
#: tuple in one step but a tuple subclass (a NamedTuple) item by item through the iterator protocol, and a
#: read unpacks one step per mapped attribute of every entry it lists.
ReadRow = tuple[str, str | None, Shape, str, str | None, str | None, Kind, bool]


def read_row(step: ReadStep) -> ReadRow:
    return (step.ldap, step.fallback, step.shape, step.name, step.sub, step.type, step.kind, step.extension)


class DiffRules(NamedTuple):
    """How ``resources.diff`` treats each LDAP attribute of a mapping (keys: lower-case LDAP names)."""

    #: The kind of value each attribute holds (absent: a string).
    kinds: Mapping[str, Kind]
    #: Attributes behind multi-valued SCIM attributes: the same values in another order are no change.
    multi: frozenset[str]
    #: Attributes changed value by value (group members), not replaced whole.
    by_value: frozenset[str]


def diff_rules(attributes: tuple[AttrMap, ...]) -> DiffRules:
    kinds = {a.ldap.lower(): a.kind for a in attributes}
    multi = frozenset(a.ldap.lower() for a in attributes if a.kind is Kind.REFERENCE or a.parts[2] is not None)
    # Only members change value by value (a group may hold 50,000). Anything else is replaced whole: an
    # LDAP attribute behind a SCIM multi-valued one may be single-valued (AD's mail, manager), and a
    # delete plus an add of one value in one modify is refused there ("specified more than once").
    by_value = frozenset(a.ldap.lower() for a in attributes if a.kind is Kind.REFERENCE and a.parts[0] == "members")
    return DiffRules(kinds, multi, by_value)


@dataclass(frozen=True, slots=True)
class ResourceMapping:
    """How one SCIM resource type lives in the directory."""

    name: str
    endpoint: str
    schema: str
    object_classes: tuple[str, ...]
    ldap_filter: str
    rdn_attribute: str
    rdn_from: str
    container: str
    id_attribute: str
    id_binary: bool = False
    attributes: tuple[AttrMap, ...] = ()
    create_defaults: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()
    #: AD's pre-Windows-2000 logon name: on create, a unique value derived from the RDN source's local
    #: part (before any ``@``), at most ``account_name_length`` characters, unless a mapping sets it.
    account_name: str | None = None
    account_name_length: int = 20
    #: What ``members``' LDAP attribute holds while a group has no members, for object classes that
    #: require one (groupOfNames MUSTs ``member``); never shown in SCIM. None: an empty group has none.
    empty_members: str | None = None
    #: ``attributes`` as reads apply them, ``ReadStep``s as plain tuples (derived, like ``ldap_attributes``;
    #: ``replace`` recomputes both).
    read_plan: tuple[ReadRow, ...] = field(init=False, repr=False, compare=False)
    #: The LDAP attributes to fetch to build a full resource (every search and get asks for them).
    ldap_attributes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    #: The lower-case LDAP attributes that hold DNs of other resources (``manager``, ``member``).
    reference_attributes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    #: ``attributes`` by lower-case SCIM attribute name, every type and sub-attribute of it (derived).
    _by_name: Mapping[str, tuple[AttrMap, ...]] = field(init=False, repr=False, compare=False)
    #: The first of ``attributes`` with each lower-case path (derived): ``find`` answers a PATCH several
    #: times (the RDN source, members, each reference) and should not lower every path each time.
    _by_path: Mapping[str, AttrMap] = field(init=False, repr=False, compare=False)
    #: How ``resources.diff`` compares and writes each lower-case LDAP attribute (derived, once per mapping
    #: rather than at every PUT and PATCH).
    diff_rules: DiffRules = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_plan", tuple(read_row(read_step(a)) for a in self.attributes))
        by_name: dict[str, tuple[AttrMap, ...]] = {}
        for attr in self.attributes:
            name = attr.parts[0].lower()
            by_name[name] = (*by_name.get(name, ()), attr)
        object.__setattr__(self, "_by_name", by_name)
        by_path: dict[str, AttrMap] = {}
        for attr in self.attributes:
            by_path.setdefault(attr.path.lower(), attr)
        object.__setattr__(self, "_by_path", by_path)
        object.__setattr__(self, "diff_rules", diff_rules(self.attributes))
        references = dict.fromkeys(a.ldap.lower() for a in self.attributes if a.kind is Kind.REFERENCE)
        object.__setattr__(self, "reference_attributes", tuple(references))
        names = {self.id_attribute, "objectClass", self.rdn_attribute}
        names.update(a.ldap for a in self.attributes)
        names.update(a.fallback for a in self.attributes if a.fallback)
        object.__setattr__(self, "ldap_attributes", tuple(sorted(names, key=str.lower)))

    def find(self, path: str) -> AttrMap | None:
        """The first mapping whose path is ``path`` (case-insensitive), or None."""
        return self._by_path.get(path.lower())

    def by_attribute(self, name: str) -> tuple[AttrMap, ...]:
        """Every mapping of SCIM attribute ``name`` (all types and sub-attributes), in profile order."""
        return self._by_name.get(name.lower(), ())


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    users: ResourceMapping
    groups: ResourceMapping

    #: Each mapping by its lower-case name, endpoint and endpoint without the slash (derived).
    _by_name: dict[str, ResourceMapping] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, ResourceMapping] = {}
        for mapping in reversed(self.resources):  # users win a name both could claim, as they are asked first
            endpoint = mapping.endpoint.lower()
            by_name.update(dict.fromkeys((mapping.name.lower(), endpoint, endpoint.lstrip("/")), mapping))
        object.__setattr__(self, "_by_name", by_name)

    @property
    def resources(self) -> tuple[ResourceMapping, ResourceMapping]:
        return (self.users, self.groups)

    def resource(self, name: str) -> ResourceMapping:
        mapping = self._by_name.get(name.lower())
        if mapping is None:
            raise KeyError(name)
        return mapping


class ProfileError(ValueError):
    """A profile name or override is invalid."""


_COMMON_USER = (
    AttrMap("name.givenName", "givenName"),
    AttrMap("name.familyName", "sn"),
    AttrMap("displayName", "displayName"),
    AttrMap("title", "title"),
    AttrMap("emails[work]", "mail"),
    AttrMap("phoneNumbers[work]", "telephoneNumber"),
    AttrMap("phoneNumbers[mobile]", "mobile"),
    AttrMap("enterprise:employeeNumber", "employeeNumber"),
    AttrMap("enterprise:manager", "manager", Kind.REFERENCE),
)

OPENLDAP = Profile(
    name="openldap",
    users=ResourceMapping(
        name="User",
        endpoint="/Users",
        schema=CORE_USER,
        extensions=(ENTERPRISE,),
        object_classes=("top", "person", "organizationalPerson", "inetOrgPerson"),
        ldap_filter="(objectClass=inetOrgPerson)",
        rdn_attribute="uid",
        rdn_from="userName",
        container="ou=people",
        id_attribute="entryUUID",
        attributes=(
            AttrMap("userName", "uid"),
            AttrMap("name.formatted", "cn"),
            *_COMMON_USER,
            AttrMap("enterprise:department", "departmentNumber"),
            AttrMap("enterprise:organization", "o"),
            AttrMap("meta.created", "createTimestamp", Kind.TIMESTAMP, read_only=True),
            AttrMap("meta.lastModified", "modifyTimestamp", Kind.TIMESTAMP, read_only=True),
        ),
    ),
    groups=ResourceMapping(
        name="Group",
        endpoint="/Groups",
        schema=CORE_GROUP,
        object_classes=("top", "groupOfNames"),
        ldap_filter="(objectClass=groupOfNames)",
        rdn_attribute="cn",
        rdn_from="displayName",
        container="ou=groups",
        id_attribute="entryUUID",
        empty_members="",  # the empty DN (the root DSE's name): a member that is no user and no group
        attributes=(
            AttrMap("displayName", "cn"),
            AttrMap("members", "member", Kind.REFERENCE),
            AttrMap("meta.created", "createTimestamp", Kind.TIMESTAMP, read_only=True),
            AttrMap("meta.lastModified", "modifyTimestamp", Kind.TIMESTAMP, read_only=True),
        ),
    ),
)

AD = Profile(
    name="ad",
    users=ResourceMapping(
        name="User",
        endpoint="/Users",
        schema=CORE_USER,
        extensions=(ENTERPRISE,),
        object_classes=("top", "person", "organizationalPerson", "user"),
        ldap_filter="(&(objectClass=user)(!(objectClass=computer)))",
        rdn_attribute="cn",
        rdn_from="userName",
        container="cn=Users",
        id_attribute="objectGUID",
        id_binary=True,
        attributes=(
            AttrMap("userName", "userPrincipalName"),
            AttrMap("externalId", "mS-DS-ConsistencyGuid", Kind.GUID, fallback="objectGUID"),
            AttrMap("name.formatted", "cn", read_only=True),
            AttrMap("active", "userAccountControl", Kind.ACTIVE_UAC),
            *_COMMON_USER,
            AttrMap("enterprise:department", "department"),
            AttrMap("enterprise:organization", "company"),
            AttrMap("meta.created", "whenCreated", Kind.TIMESTAMP, read_only=True),
            AttrMap("meta.lastModified", "whenChanged", Kind.TIMESTAMP, read_only=True),
        ),
        create_defaults={"userAccountControl": ("512",)},
        account_name="sAMAccountName",
    ),
    groups=ResourceMapping(
        name="Group",
        endpoint="/Groups",
        schema=CORE_GROUP,
        object_classes=("top", "group"),
        ldap_filter="(objectClass=group)",
        rdn_attribute="cn",
        rdn_from="displayName",
        container="cn=Users",
        id_attribute="objectGUID",
        id_binary=True,
        account_name="sAMAccountName",
        account_name_length=64,
        attributes=(
            AttrMap("displayName", "cn"),
            AttrMap("externalId", "mS-DS-ConsistencyGuid", Kind.GUID, fallback="objectGUID"),
            AttrMap("members", "member", Kind.REFERENCE),
            AttrMap("meta.created", "whenCreated", Kind.TIMESTAMP, read_only=True),
            AttrMap("meta.lastModified", "whenChanged", Kind.TIMESTAMP, read_only=True),
        ),
    ),
)

PROFILES = {p.name: p for p in (OPENLDAP, AD)}


def _override(mapping: ResourceMapping, changes: Mapping[str, Any]) -> ResourceMapping:
    attributes = list(mapping.attributes)
    for path, target in changes.items():
        existing = mapping.find(path)
        attributes = [a for a in attributes if a is not existing]
        if target is None:
            continue
        if isinstance(target, str):
            kind = existing.kind if existing else Kind.STRING
            attributes.append(AttrMap(path, target, kind, existing.read_only if existing else False))
        elif isinstance(target, Mapping):
            try:
                kind = Kind(target.get("kind", "string"))
                attributes.append(AttrMap(path, str(target["ldap"]), kind, bool(target.get("read_only"))))
            except (KeyError, ValueError) as exc:
                raise ProfileError(f"{mapping.name}.{path}: needs 'ldap' and a known 'kind' ({exc})") from None
        else:
            raise ProfileError(f"{mapping.name}.{path}: expected an LDAP attribute name, a mapping or null")
    return replace(mapping, attributes=tuple(attributes))


def load_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """A built-in profile with config overrides applied (``{"User": {...}, "Group": {...}}``)."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r}; choose one of {', '.join(sorted(PROFILES))}") from None
    for resource, changes in (overrides or {}).items():
        if not isinstance(changes, Mapping):
            raise ProfileError(f"profile override {resource!r} must map SCIM attributes to LDAP attributes")
        settings: dict[str, Any] = {k: v for k, v in changes.items() if k.startswith("_")}
        attribute_changes = {k: v for k, v in changes.items() if not k.startswith("_")}
        try:
            mapping = profile.resource(resource)
        except KeyError:
            raise ProfileError(f"profile override names unknown resource type {resource!r} (User or Group)") from None
        updated = _override(mapping, attribute_changes)
        for key, value in settings.items():
            field_name = key.removeprefix("_")
            if field_name not in {"container", "ldap_filter", "rdn_attribute", "rdn_from"}:
                raise ProfileError(f"profile override {resource}.{key} is not a setting that can be changed")
            settable: dict[str, Any] = {field_name: str(value)}
            updated = replace(updated, **settable)
        profile = replace(profile, users=updated) if mapping is profile.users else replace(profile, groups=updated)
    return profile
