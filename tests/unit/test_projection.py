"""``attributes`` / ``excludedAttributes`` parsing and projection of SCIM resources."""

from __future__ import annotations

from typing import Any

import pytest

from agent.scim.profile import CORE_USER, ENTERPRISE
from agent.scim.projection import AttrPath, ldap_attributes_for, parse_paths, project
from protocol.errors import ScimError

RESOURCE: dict[str, Any] = {
    "schemas": [CORE_USER, ENTERPRISE],
    "id": "42",
    "userName": "ann",
    "name": {"givenName": "Ann", "familyName": "Alpha"},
    "emails": [{"value": "ann@x.example", "type": "work", "primary": True}],
    ENTERPRISE: {"department": "Sales", "employeeNumber": "7"},
    "meta": {"resourceType": "User", "location": "/Users/42"},
}


def test_parse_paths_reads_names_subattributes_and_urns() -> None:
    """Paths are split on commas, lower-cased, and URN prefixes resolved to core or the extension."""
    paths = parse_paths(f" userName , Name.GivenName,{ENTERPRISE}:department,{CORE_USER}:title")
    assert paths == [
        AttrPath(None, "username", None),
        AttrPath(None, "name", "givenname"),
        AttrPath(ENTERPRISE, "department", None),
        AttrPath(None, "title", None),
    ]


@pytest.mark.parametrize("text", [None, "", "  ", ", ,"])
def test_parse_paths_absent_is_none(text: str | None) -> None:
    """An absent or empty parameter means no projection."""
    assert parse_paths(text) is None


@pytest.mark.parametrize("text", ["user)Name", "a..b", "1abc", 'emails[type eq "work"]'])
def test_parse_paths_rejects_non_paths(text: str) -> None:
    """Anything that is not an attribute path is 400 invalidPath naming it."""
    with pytest.raises(ScimError) as caught:
        parse_paths(text)
    assert (caught.value.status, caught.value.scim_type) == (400, "invalidPath")
    assert text.strip() in caught.value.detail


def test_attributes_keep_only_named_plus_always_returned() -> None:
    """``attributes`` keeps the named attributes plus id and schemas."""
    assert project(RESOURCE, parse_paths("userName"), None) == {
        "schemas": RESOURCE["schemas"],
        "id": "42",
        "userName": "ann",
    }


def test_attributes_sub_attribute_of_complex_and_multi_valued() -> None:
    """A sub-attribute path keeps only that sub-attribute of a complex or multi-valued attribute."""
    out = project(RESOURCE, parse_paths("name.familyName,emails.value"), None)
    assert out["name"] == {"familyName": "Alpha"}
    assert out["emails"] == [{"value": "ann@x.example"}]


def test_attributes_extension_attribute_and_whole_extension() -> None:
    """An extension attribute path keeps that attribute; the extension URN alone keeps it whole."""
    assert project(RESOURCE, parse_paths(f"{ENTERPRISE}:department"), None)[ENTERPRISE] == {"department": "Sales"}
    assert project(RESOURCE, parse_paths(ENTERPRISE), None)[ENTERPRISE] == RESOURCE[ENTERPRISE]
    assert ENTERPRISE not in project(RESOURCE, parse_paths("userName"), None)


def test_excluded_attributes_drop_but_never_id_or_schemas() -> None:
    """``excludedAttributes`` drops attributes and sub-attributes, never id or schemas."""
    out = project(RESOURCE, None, parse_paths("id,schemas,meta,name.givenName"))
    assert out["id"] == "42"
    assert out["schemas"] == RESOURCE["schemas"]
    assert "meta" not in out
    assert out["name"] == {"familyName": "Alpha"}


def test_excluded_extension_attribute_and_whole_extension() -> None:
    """Excluding an extension attribute drops it from the extension; excluding the URN drops the extension."""
    assert project(RESOURCE, None, parse_paths(f"{ENTERPRISE}:department"))[ENTERPRISE] == {"employeeNumber": "7"}
    assert ENTERPRISE not in project(RESOURCE, None, parse_paths(ENTERPRISE))


def test_projection_is_case_insensitive() -> None:
    """Attribute names match whatever their case."""
    assert project(RESOURCE, parse_paths("USERNAME"), None)["userName"] == "ann"
    assert "userName" not in project(RESOURCE, None, parse_paths("username"))


def test_projection_never_mutates_the_resource() -> None:
    """Projecting leaves the input resource as it was."""
    before = repr(RESOURCE)
    project(RESOURCE, parse_paths("name.givenName,emails.type"), None)
    project(RESOURCE, None, parse_paths(f"name.givenName,emails.type,{ENTERPRISE}:department"))
    assert repr(RESOURCE) == before


def test_no_projection_returns_everything() -> None:
    """Without attributes or excludedAttributes the resource is returned whole."""
    assert project(RESOURCE, None, None) == RESOURCE


def test_ldap_attributes_for_names_what_the_projection_needs() -> None:
    """The attributes a projection needs include id, the named core names and enterprise ones; None means all."""
    assert ldap_attributes_for(None, None) is None
    needed = ldap_attributes_for(parse_paths(f"userName,{ENTERPRISE}:department"), None)
    assert needed == {"id", "username", "enterprise:department"}
