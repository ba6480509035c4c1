"""Directory entries → SCIM resources, and SCIM resources → LDAP attribute values, by profile.

``to_resource`` builds the JSON a SCIM client sees from an entry and the references resolved for
its DN-valued attributes. ``to_ldap`` goes the other way for create and replace: it returns the
LDAP values of every writable mapped attribute (an empty list means "clear it"), resolving SCIM
ids of referenced resources to DNs; a group without members gets the profile's ``empty_members``
placeholder where its object class requires a member. ``diff`` turns old and new values into LDAP
modifications: group members change by adding and deleting single values, never by a whole replace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agent.scim import values as conv
from agent.scim.profile import ENTERPRISE, LDAP_ENTRY, AttrMap, Kind, ResourceMapping, Shape
from agent.scim.refs import Ref
from agent.scim.values import anchor_to_id, apply_active, text, timestamp_to_scim, to_scim
from plugins import dn as dnlib
from plugins.directory import AttrValue, Entry, InvalidDNError, Modification, ModOp
from protocol.errors import invalid_value

# Enum members as module globals: Python 3.11 reads a member from its class (``Kind.STRING``) 5-10
# times slower (its metaclass defines __getattr__), and conversions compare several per attribute of every entry.
_ACTIVE_UAC, _GUID, _REFERENCE, _STRING = Kind.ACTIVE_UAC, Kind.GUID, Kind.REFERENCE, Kind.STRING
_TIMESTAMP = Kind.TIMESTAMP
_META, _SIMPLE, _SUB, _TYPED = Shape.META, Shape.SIMPLE, Shape.SUB, Shape.TYPED

Resource = dict[str, Any]
ResolveId = Callable[[str], Awaitable[Ref | None]]


def ci_get(data: Mapping[str, Any], key: str) -> Any:
    """``data[key]`` with SCIM's case-insensitive attribute names."""
    if key in data:
        return data[key]
    lowered = key.lower()
    return next((v for k, v in data.items() if k.lower() == lowered), None)


def reference_value(ref: Ref, endpoint: str) -> dict[str, Any]:
    return {"value": ref.id, "$ref": f"{endpoint}/{ref.id}", "type": ref.resource}


def _endpoint(resource: str) -> str:
    return "/Users" if resource == "User" else "/Groups"


def to_resource(mapping: ResourceMapping, entry: Entry, refs: Mapping[str, Ref]) -> Resource:
    """The SCIM resource for ``entry``; ``refs`` maps normalised DNs to resolved references.

    Runs once per entry of every listing (a full read of 100,000 users): it follows the mapping's
    precomputed ``read_plan`` (attribute names lowered once), looks each attribute up once (no
    exception for an absent one) and converts plain text without a call.
    """
    attributes = entry.attributes
    item_of = attributes.by_key.get
    anchor = attributes.first(mapping.id_attribute)
    if type(anchor) is str and not mapping.id_binary:
        scim_id = anchor
    else:
        scim_id = anchor_to_id(anchor, mapping.id_binary) if anchor is not None else ""
    resource: Resource = {"schemas": [mapping.schema], "id": scim_id}
    meta: dict[str, Any] = {"resourceType": mapping.name, "location": f"{mapping.endpoint}/{scim_id}"}
    extension: dict[str, Any] = {}
    for ldap, fallback, shape, name, sub, element_type, kind, in_extension in mapping.read_plan:
        item = item_of(ldap)
        if item is None:
            if fallback is None:
                continue
            item = item_of(fallback)
            if item is None:
                continue
        target = extension if in_extension else resource
        if shape is _SIMPLE:
            value = item[1][0]
            target[name] = value if kind is _STRING and type(value) is str else to_scim(kind, value)
        elif shape is _SUB:
            value = item[1][0]
            shown = value if kind is _STRING and type(value) is str else to_scim(kind, value)
            complex_value = target.get(name)
            if complex_value is None:  # the first sub-attribute (no empty dict made for every other one)
                target[name] = {sub: shown}
            else:
                complex_value[sub] = shown
        elif shape is _TYPED:
            elements = target.get(name)
            if elements is None:
                elements = target[name] = []
                primary_needed = True
            else:  # another type of the same attribute came first (phoneNumbers: work, then mobile)
                primary_needed = not any(element.get("primary") for element in elements)
            for each in item[1]:
                shown = each if kind is _STRING and type(each) is str else to_scim(kind, each)
                elements.append({"value": shown, "type": element_type})
            if primary_needed:
                elements[0]["primary"] = True
        elif shape is _META:
            value = item[1][0]
            meta[sub] = (  # type: ignore[index]  # META steps have a sub-attribute
                timestamp_to_scim(value) if kind is _TIMESTAMP and type(value) is str else to_scim(kind, value)
            )
        else:
            resolved = _references(item[1], refs)
            if name == "members" and resolved:
                target[name] = resolved  # no members (only a placeholder, or none resolvable): omitted
            elif resolved:
                target[name] = resolved[0]
    if extension:
        resource["schemas"].append(ENTERPRISE)
        resource[ENTERPRISE] = extension
    resource["schemas"].append(LDAP_ENTRY)
    resource[LDAP_ENTRY] = {"distinguishedName": entry.dn}
    resource["meta"] = meta
    return resource


def _references(values: list[AttrValue], refs: Mapping[str, Ref]) -> list[dict[str, Any]]:
    resolved = []
    for value in values:
        try:
            ref = refs.get(dnlib.normalize(text(value)))
        except InvalidDNError:
            ref = None
        if ref is not None:
            resolved.append(reference_value(ref, _endpoint(ref.resource)))
    return resolved


def reference_dns(mapping: ResourceMapping, entries: list[Entry]) -> set[str]:
    """Every DN held in a reference attribute of these entries (to resolve in one batch)."""
    dns: set[str] = set()
    for name in mapping.reference_attributes:
        for entry in entries:
            values = entry.attributes.values_lower(name)
            if values is not None:  # most entries have none (a user's manager)
                dns.update(text(v) for v in values)
    if mapping.empty_members is not None:
        dns.discard(mapping.empty_members)
    return dns


def members_placeholder(mapping: ResourceMapping) -> tuple[str, str] | None:
    """(LDAP attribute, value) that stands for "no members" in this mapping, if it needs one."""
    members = mapping.find("members")
    if members is None or mapping.empty_members is None:
        return None
    return members.ldap, mapping.empty_members


def _scim_values(attr: AttrMap, resource: Mapping[str, Any]) -> list[Any] | None:
    """The SCIM values for one mapping in ``resource`` (None: the attribute is absent)."""
    container: Any = resource
    if attr.extension:
        container = ci_get(resource, ENTERPRISE)
        if container is None:
            return None
        if not isinstance(container, Mapping):
            raise invalid_value(f"{ENTERPRISE} must be an object")
    name, sub, kind = attr.parts
    value = ci_get(container, name)
    if value is None:
        return None
    if kind is not None:
        if not isinstance(value, list):
            raise invalid_value(f"{name} must be a list of objects")
        picked = []
        for element in value:
            if not isinstance(element, Mapping):
                raise invalid_value(f"each element of {name} must be an object")
            element_type = ci_get(element, "type")
            if element_type is not None and not isinstance(element_type, str):
                raise invalid_value(f"the type of each element of {name} must be a string")
            if (element_type or "").lower() == kind.lower() or (element_type is None and _is_default_type(attr, kind)):
                picked.append(ci_get(element, "value"))
        return [v for v in picked if v not in (None, "")]
    if attr.kind is _REFERENCE:
        elements = value if isinstance(value, list) else [value]
        ids = []
        for element in elements:
            ref_id = ci_get(element, "value") if isinstance(element, Mapping) else element
            if ref_id in (None, "") and name != "members":
                continue  # a manager without its id (manager.value removed, Entra's "") is no manager
            if not isinstance(ref_id, str) or not ref_id:
                raise invalid_value(f"{name} values must be objects with a string 'value' (the referenced id)")
            ids.append(ref_id)
        return ids
    if sub is not None:
        if not isinstance(value, Mapping):
            raise invalid_value(f"{name} must be an object")
        value = ci_get(value, sub)
        if value is None:
            return None
    return [] if value == "" else [value]


def _is_default_type(attr: AttrMap, kind: str) -> bool:
    """Elements without a ``type`` go to the first typed mapping of their attribute (emails → work)."""
    return kind.lower() in {"work"}


async def to_ldap(
    mapping: ResourceMapping, resource: Mapping[str, Any], resolve: ResolveId, current: Entry | None = None
) -> dict[str, list[AttrValue]]:
    """LDAP values of every writable mapped attribute present in ``resource``, keyed by LDAP name.

    Absent attributes map to ``[]`` when ``current`` is given (a replace clears them). References
    are resolved through ``resolve``; an unknown id is a 400 ``invalidValue``.
    """
    values: dict[str, list[AttrValue]] = {}
    for attr in mapping.attributes:
        if attr.read_only:
            continue
        try:
            scim = _scim_values(attr, resource)
        except ValueError as exc:
            raise invalid_value(f"{attr.path}: {exc}") from None
        if scim is None and (attr.kind is _ACTIVE_UAC or attr.fallback):
            continue  # userAccountControl holds more than 'active', an anchor is never cleared: keep them
        if scim is not None and attr.fallback and current is not None and not current.get(attr.ldap):
            shown = [conv.to_scim(attr.kind, v) for v in current.get(attr.fallback)]
            if scim == shown:
                continue  # what a read shows already (the fallback): nothing to write
        bucket = values.setdefault(attr.ldap, [])
        if scim is None:
            continue
        held: set[str] = set()  # a reference's normalized DNs: a value given twice is written once
        for value in scim:
            if attr.kind is _REFERENCE:
                ref = await resolve(str(value))
                if ref is None:
                    raise invalid_value(f"{attr.path}: no resource has id {value!r}")
                key = dnlib.normalize(ref.dn)
                if key not in held:
                    held.add(key)
                    bucket.append(ref.dn)
            elif attr.kind is _ACTIVE_UAC:
                if not isinstance(value, bool):
                    raise invalid_value(f"active must be true or false, got {value!r}")
                current_uac = current.first(attr.ldap) if current else None
                bucket.append(apply_active(current_uac, value))
            else:
                try:
                    converted = conv.to_ldap(attr.kind, value)
                except ValueError as exc:
                    raise invalid_value(f"{attr.path}: {exc}") from None
                if not any(_same(attr.kind, other, converted) for other in bucket):
                    bucket.append(converted)  # two emails differing in case are one value to LDAP
    placeholder = members_placeholder(mapping)
    if placeholder is not None and not values.get(placeholder[0]):
        values[placeholder[0]] = [placeholder[1]]
    return values


def _same(kind: Kind, left: AttrValue, right: AttrValue) -> bool:
    if kind is _GUID:
        return left == right
    if kind is _REFERENCE:
        try:
            return dnlib.normalize(text(left)) == dnlib.normalize(text(right))
        except InvalidDNError:
            return text(left).lower() == text(right).lower()
    return text(left).lower() == text(right).lower() if kind is _STRING else text(left) == text(right)


def requested(
    mapping: ResourceMapping,
    entry: Entry,
    shown: Mapping[str, list[AttrValue]],
    wanted: Mapping[str, list[AttrValue]],
) -> dict[str, list[AttrValue]]:
    """The part of ``wanted`` a PATCH or PUT asked for: the attributes whose values differ from ``shown``
    (``to_ldap`` of the resource as SCIM showed ``entry`` before the request).

    SCIM does not show all of an entry: only the first value of an LDAP attribute behind a single-valued
    SCIM one, no member or manager that is not a SCIM resource (a computer, a contact, a dangling DN).
    An attribute the request left alone is not written, so none of that is lost; members the request
    did change are added and removed one by one, and the ones SCIM cannot show stay.
    """
    kinds, _, by_value = mapping.diff_rules
    placeholder = mapping.empty_members
    changed: dict[str, list[AttrValue]] = {}
    for name, values in wanted.items():
        before = shown.get(name)
        if before == values:
            continue
        if before is not None and name.lower() in by_value:
            kind = kinds.get(name.lower(), _STRING)
            unseen = [v for v in entry.get(name) if not any(_same(kind, v, b) for b in before)]
            if unseen:  # members SCIM cannot show: kept, and the group is not empty
                kept = [v for v in values if placeholder is None or not _same(kind, v, placeholder)]
                values = kept + [v for v in unseen if not any(_same(kind, v, k) for k in kept)]
        changed[name] = values
    return changed


def diff(mapping: ResourceMapping, entry: Entry, new: Mapping[str, list[AttrValue]]) -> list[Modification]:
    """Modifications that turn ``entry``'s mapped attributes into ``new`` (RDN attribute excluded)."""
    kinds, multi, by_value = mapping.diff_rules  # see profile.diff_rules
    changes: list[Modification] = []
    for name, wanted in new.items():
        if name.lower() == mapping.rdn_attribute.lower():
            continue
        old = entry.get(name)
        if old == wanted:  # the same values in the same order (most attributes of a PATCH or PUT)
            continue
        kind = kinds.get(name.lower(), _STRING)
        same_set = len(old) == len(wanted) and all(any(_same(kind, o, w) for o in old) for w in wanted)
        if same_set and (name.lower() in multi or [text(o) for o in old] == [text(w) for w in wanted]):
            continue
        if name.lower() in by_value and old:
            added = tuple(w for w in wanted if not any(_same(kind, o, w) for o in old))
            removed = tuple(o for o in old if not any(_same(kind, o, w) for w in wanted))
            if removed:
                changes.append(Modification(ModOp.DELETE, name, removed))
            if added:
                changes.append(Modification(ModOp.ADD, name, added))
        elif wanted:
            changes.append(Modification(ModOp.REPLACE, name, tuple(wanted)))
        elif old:
            changes.append(Modification(ModOp.DELETE, name, ()))
    return changes
