"""Mapping profiles: the built-in ones, overrides from config, and errors that name the problem."""

from __future__ import annotations

from typing import Any

import pytest

from agent.scim.profile import AD, OPENLDAP, AttrMap, Kind, ProfileError, ResourceMapping, load_profile


def test_builtin_profiles() -> None:
    """openldap maps userName to uid with entryUUID ids; ad to userPrincipalName with binary objectGUID ids."""
    openldap, ad = load_profile("openldap"), load_profile("ad")
    assert openldap.users.find("userName") == AttrMap("userName", "uid")
    assert (openldap.users.id_attribute, openldap.users.id_binary) == ("entryUUID", False)
    assert ad.users.find("userName") == AttrMap("userName", "userPrincipalName")
    assert (ad.users.id_attribute, ad.users.id_binary) == ("objectGUID", True)
    assert ad.users.find("active") is not None
    assert ad.users.find("active").kind is Kind.ACTIVE_UAC  # type: ignore[union-attr]
    assert openldap.groups.find("members") == AttrMap("members", "member", Kind.REFERENCE)


def test_unknown_profile_names_the_choices() -> None:
    """An unknown profile name is refused with the names that exist."""
    with pytest.raises(ProfileError, match=r"unknown profile 'novell'.*ad, openldap"):
        load_profile("novell")


def test_override_replaces_a_mapping_keeping_its_kind() -> None:
    """A string override points the SCIM attribute at another LDAP attribute, keeping kind and read-only."""
    profile = load_profile("ad", {"User": {"userName": "sAMAccountName", "meta.created": "createTimeStamp"}})
    assert profile.users.find("userName") == AttrMap("userName", "sAMAccountName")
    created = profile.users.find("meta.created")
    assert created == AttrMap("meta.created", "createTimeStamp", Kind.TIMESTAMP, read_only=True)
    assert "sAMAccountName" in profile.users.ldap_attributes


def test_override_null_removes_and_new_paths_add() -> None:
    """null removes a mapping; a new path adds one, with a kind when given as a mapping."""
    profile = load_profile(
        "openldap",
        {
            "users": {
                "title": None,
                "nickName": "displayName",
                "enterprise:costCenter": {"ldap": "cc", "kind": "integer"},
            }
        },
    )
    assert profile.users.find("title") is None
    assert profile.users.find("nickName") == AttrMap("nickName", "displayName")
    assert profile.users.find("enterprise:costCenter") == AttrMap("enterprise:costCenter", "cc", Kind.INTEGER)


def test_override_does_not_touch_the_builtin() -> None:
    """Overrides build a new profile; the built-in one stays as it was."""
    load_profile("openldap", {"User": {"title": None}})
    assert load_profile("openldap").users.find("title") is not None


def test_override_settings() -> None:
    """Underscored keys change the mapping's settings (container, filter, RDN)."""
    profile = load_profile("openldap", {"Group": {"_container": "ou=teams", "_rdn_attribute": "ou"}})
    assert (profile.groups.container, profile.groups.rdn_attribute) == ("ou=teams", "ou")
    assert profile.users.container == "ou=people"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"Printer": {"x": "y"}}, "unknown resource type 'Printer'"),
        ({"User": "uid"}, "profile override 'User' must map"),
        ({"User": {"title": 5}}, r"User\.title: expected an LDAP attribute name, a mapping or null"),
        ({"User": {"title": {"kind": "string"}}}, r"User\.title: needs 'ldap'"),
        ({"User": {"title": {"ldap": "title", "kind": "float"}}}, r"User\.title: needs 'ldap' and a known 'kind'"),
        ({"User": {"_id_attribute": "uid"}}, r"User\._id_attribute is not a setting that can be changed"),
    ],
)
def test_invalid_overrides_name_the_problem(overrides: dict[str, Any], message: str) -> None:
    """An invalid override is a ProfileError naming the resource, the attribute and what is wrong."""
    with pytest.raises(ProfileError, match=message):
        load_profile("openldap", overrides)


def test_attr_map_parts() -> None:
    """Compact paths split into attribute, sub-attribute and type."""
    assert AttrMap("emails[work]", "mail").parts == ("emails", "value", "work")
    assert AttrMap("name.givenName", "givenName").parts == ("name", "givenName", None)
    assert AttrMap("enterprise:department", "department").parts == ("department", None, None)
    assert AttrMap("enterprise:department", "department").extension


def test_resource_lookup_by_name_or_endpoint() -> None:
    """A resource mapping is found by type name or endpoint, any case; an unknown one is a KeyError."""
    profile = load_profile("openldap")
    assert profile.resource("user") is profile.users
    assert profile.resource("/Groups") is profile.groups
    assert profile.resource("groups") is profile.groups
    with pytest.raises(KeyError):
        profile.resource("printers")


@pytest.mark.parametrize(
    "mapping",
    [
        *OPENLDAP.resources,
        *AD.resources,
        load_profile("openldap", {"User": {"NAME.givenName": "gn", "phoneNumbers[home]": "homePhone"}}).users,
    ],
)
def test_find_is_the_first_mapping_with_the_path(mapping: ResourceMapping) -> None:
    """``find`` (a table made once) answers as a scan of the mappings for the first case-insensitive match."""
    paths = [a.path for a in mapping.attributes] + ["nosuch", "members.value", "emails"]
    for path in [*paths, *(p.upper() for p in paths), *(p.lower() for p in paths)]:
        expected = next((a for a in mapping.attributes if a.path.lower() == path.lower()), None)
        assert mapping.find(path) is expected
