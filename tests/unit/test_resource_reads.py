"""Code that runs once per listed entry (``to_resource``'s read plan, generalized time) gives exactly
what the straightforward step-by-step code gives."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.scim.profile import ENTERPRISE, LDAP_ENTRY, Kind, ResourceMapping, load_profile
from agent.scim.refs import Ref
from agent.scim.resources import reference_dns, reference_value, to_resource
from agent.scim.values import anchor_to_id, generalized_to_iso, text, timestamp_to_scim, to_scim
from plugins import dn as dnlib
from plugins.directory import Attributes, AttrValue, Entry, InvalidDNError

MAPPINGS = [
    load_profile("openldap").users,
    load_profile("openldap").groups,
    load_profile("ad").users,
    load_profile("ad").groups,
    load_profile("openldap", {"User": {"phoneNumbers[home]": "homePhone", "title": None}}).users,
]
REFS = {
    "cn=a,dc=x": Ref("id-a", "cn=a,dc=x", "User"),
    "cn=g,dc=x": Ref("id-g", "cn=g,dc=x", "Group"),
}


def reference_reading(mapping: ResourceMapping, entry: Entry, refs: Mapping[str, Ref]) -> dict[str, Any]:
    """The resource as read attribute by attribute, without the plan (the oracle)."""
    anchor = entry.first(mapping.id_attribute)
    scim_id = anchor_to_id(anchor, mapping.id_binary) if anchor is not None else ""
    resource: dict[str, Any] = {"schemas": [mapping.schema], "id": scim_id}
    meta: dict[str, Any] = {"resourceType": mapping.name, "location": f"{mapping.endpoint}/{scim_id}"}
    extension: dict[str, Any] = {}
    for attr in mapping.attributes:
        values = entry.get(attr.ldap) or (entry.get(attr.fallback) if attr.fallback else [])
        if not values:
            continue
        name, sub, kind = attr.parts
        target = extension if attr.extension else resource
        if name == "meta" and sub:
            meta[sub] = to_scim(attr.kind, values[0])
            continue
        if attr.kind is Kind.REFERENCE:
            resolved = []
            for value in values:
                try:
                    ref = refs.get(dnlib.normalize(text(value)))
                except InvalidDNError:
                    ref = None
                if ref is not None:
                    resolved.append(reference_value(ref, "/Users" if ref.resource == "User" else "/Groups"))
            if name == "members" and resolved:
                target[name] = resolved
            elif resolved:
                target[name] = resolved[0]
            continue
        if kind is not None:
            elements = target.setdefault(name, [])
            for value in values:
                elements.append({"value": to_scim(attr.kind, value), "type": kind})
            if elements and not any(e.get("primary") for e in elements):
                elements[0]["primary"] = True
        elif sub is not None:
            target.setdefault(name, {})[sub] = to_scim(attr.kind, values[0])
        else:
            target[name] = to_scim(attr.kind, values[0])
    if extension:
        resource["schemas"].append(ENTERPRISE)
        resource[ENTERPRISE] = extension
    resource["schemas"].append(LDAP_ENTRY)
    resource[LDAP_ENTRY] = {"distinguishedName": entry.dn}
    resource["meta"] = meta
    return resource


_TEXT = st.sampled_from(["x", "Ada", "TRUE", "512", "514", "20240131120000Z", "20240131120000.0Z", "", "é"])
_VALUE: st.SearchStrategy[AttrValue] = st.one_of(
    _TEXT,
    st.sampled_from(["cn=a,dc=x", "CN=A, DC=X", "cn=g,dc=x", "cn=nobody,dc=x", "not a dn", ""]),
    st.binary(min_size=0, max_size=17),
    st.just(uuid.UUID(int=7).bytes_le),
)
_NAMES = sorted(
    {n for m in MAPPINGS for a in m.attributes for n in (a.ldap, a.fallback) if n} | {m.id_attribute for m in MAPPINGS}
)
_ENTRIES = st.dictionaries(
    st.sampled_from(_NAMES).flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper()])),
    st.lists(_VALUE, max_size=3),
    max_size=12,
).map(lambda found: Entry("cn=e,dc=x", Attributes(found)))


@settings(max_examples=400)
@given(st.sampled_from(MAPPINGS), _ENTRIES)
def test_the_read_plan_builds_what_reading_one_by_one_builds(mapping: ResourceMapping, entry: Entry) -> None:
    """Any entry, any profile (overrides included): the same resource, keys in the same order at every level."""
    built = to_resource(mapping, entry, REFS)
    expected = reference_reading(mapping, entry, REFS)
    assert built == expected
    assert repr(built) == repr(expected)  # a dict's repr follows its order, nested ones included


@settings(max_examples=200)
@given(st.sampled_from(MAPPINGS), st.lists(_ENTRIES, max_size=4))
def test_reference_dns_are_every_reference_value(mapping: ResourceMapping, entries: list[Entry]) -> None:
    """The DNs to resolve for a page are the texts of every reference attribute's values, minus the
    empty-group placeholder."""
    expected = {text(v) for a in mapping.attributes if a.kind is Kind.REFERENCE for e in entries for v in e.get(a.ldap)}
    if mapping.empty_members is not None:
        expected.discard(mapping.empty_members)
    assert reference_dns(mapping, entries) == expected


def _iso_by_the_letter(value: str) -> str | None:
    """Generalized time → ISO 8601 spelled out step by step (the oracle for the fast version)."""
    digits = value[:14]
    if len(digits) != 14 or not digits.isdigit() or value[14:15] not in {"Z", ".", ",", ""}:
        return None
    if value[14:15] == "" or not value.endswith("Z"):
        return None
    return f"{digits[0:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:12]}:{digits[12:14]}Z"


@pytest.mark.parametrize(
    ("value", "iso"),
    [
        ("20240131120000Z", "2024-01-31T12:00:00Z"),
        ("20240131120000.0Z", "2024-01-31T12:00:00Z"),
        ("20240131120000,5Z", "2024-01-31T12:00:00Z"),
        ("20240131120000", None),
        ("20240131120000+0100", None),
        ("2024013112000Z", None),
        ("20240131120000ZZ", "2024-01-31T12:00:00Z"),
        ("", None),
    ],
)
def test_generalized_time_examples(value: str, iso: str | None) -> None:
    """UTC generalized time (fractions allowed) becomes ISO 8601; anything else is not converted."""
    assert generalized_to_iso(value) == iso


@settings(max_examples=500)
@given(st.text(alphabet="0123456789Z.,+-x²", max_size=20) | st.from_regex(r"\A[0-9]{14}[Z.,][0-9]{0,3}Z?\Z"))
def test_generalized_time_conversion_matches_the_spelled_out_rules(value: str) -> None:
    """The fast check accepts and converts exactly what the step-by-step rules do."""
    assert generalized_to_iso(value) == _iso_by_the_letter(value)


@settings(max_examples=300)
@given(st.lists(st.text(alphabet="0123456789Z.,x", max_size=16) | st.from_regex(r"\A[0-9]{14}Z\Z"), max_size=6))
def test_a_remembered_timestamp_shows_as_to_scim_shows_it(values: list[str]) -> None:
    """timestamp_to_scim (kept per text) gives the ISO form or, unparseable, the text itself, asked once or again."""
    for value in values + values:
        assert timestamp_to_scim(value) == (_iso_by_the_letter(value) or value)
        assert to_scim(Kind.TIMESTAMP, value) == timestamp_to_scim(value)
