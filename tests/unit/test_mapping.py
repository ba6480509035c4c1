"""Attribute mapping (defaults on realistic agent resources, configuration, apply modes, errors) and matching."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from agent.scim.profile import load_profile
from agent.scim.refs import Ref
from agent.scim.resources import to_resource
from plugins.directory import Attributes, Entry
from service.provisioning.expressions import ExpressionError
from service.provisioning.mapping import (
    DEFAULT_MAPPINGS,
    AttributeMapping,
    MappingConfigError,
    MappingError,
    ResourceMapper,
    default_mappers,
    mappings_from_config,
)
from service.provisioning.matching import Matcher, MatchError, MatchSettings, match_anchor

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
USER_DN = "CN=Lefèvre\\, Zoë,OU=Sales\\, EMEA,DC=corp,DC=example"
GROUP_DN = "CN=Ventes,OU=Groups,DC=corp,DC=example"


def ad_user(**overrides: list[Any]) -> dict[str, Any]:
    """A User resource as the agent serves it from an AD entry (AD profile)."""
    attributes: dict[str, list[Any]] = {
        "objectGUID": [uuid.UUID(int=1).bytes_le],
        "userPrincipalName": ["zoe@corp.example"],
        "cn": ["Lefèvre, Zoë"],
        "givenName": ["Zoë"],
        "sn": ["Lefèvre"],
        "displayName": ["Zoë Lefèvre"],
        "title": ["Directrice commerciale"],
        "userAccountControl": ["512"],
        "mail": ["zoe@corp.example"],
        "telephoneNumber": ["+33 1 23 45 67 89"],
        "mobile": ["+33 6 12 34 56 78"],
        "employeeNumber": ["0042"],
        "department": ["Ventes"],
        "company": ["Corp SA"],
        **overrides,
    }
    return to_resource(load_profile("ad").users, Entry(USER_DN, Attributes(attributes)), {})


def openldap_group() -> dict[str, Any]:
    """A Group resource as the agent serves it from an OpenLDAP groupOfNames."""
    member = Ref(id="u-1", dn="uid=zoe,ou=people,dc=example,dc=com", resource="User")
    entry = Entry(GROUP_DN, Attributes({"entryUUID": ["g-1"], "cn": ["Ventes"], "member": [member.dn]}))
    return to_resource(load_profile("openldap").groups, entry, {"uid=zoe,ou=people,dc=example,dc=com": member})


def test_default_user_mapping_from_an_ad_resource() -> None:
    """With no configuration a User maps to the usual SCIM attributes, keyed by target path."""
    mapped = mappings_from_config(None)["User"].map(ad_user())
    assert mapped == {
        "userName": "zoe@corp.example",
        "displayName": "Zoë Lefèvre",
        "name.givenName": "Zoë",
        "name.familyName": "Lefèvre",
        "name.formatted": "Lefèvre, Zoë",
        "title": "Directrice commerciale",
        "active": True,
        'emails[type eq "work"].value': "zoe@corp.example",
        'phoneNumbers[type eq "work"].value': "+33 1 23 45 67 89",
        'phoneNumbers[type eq "mobile"].value': "+33 6 12 34 56 78",
        f"{ENTERPRISE}:employeeNumber": "0042",
        f"{ENTERPRISE}:department": "Ventes",
        f"{ENTERPRISE}:organization": "Corp SA",
    }


def test_default_user_mapping_keeps_a_disabled_account_disabled() -> None:
    """A disabled AD account (userAccountControl 514) maps to active false, not the true default."""
    assert default_mappers()["User"].map(ad_user(userAccountControl=["514"]))["active"] is False


def test_default_user_mapping_with_missing_attributes() -> None:
    """Absent source attributes map to None (clear), and active defaults to true when the source has none."""
    resource = ad_user(title=[], mobile=[], department=[])
    del resource["active"]
    mapped = default_mappers()["User"].map(resource)
    assert mapped["title"] is None
    assert mapped['phoneNumbers[type eq "mobile"].value'] is None
    assert mapped[f"{ENTERPRISE}:department"] is None
    assert mapped["active"] is True


def test_default_group_mapping() -> None:
    """A Group maps its displayName; members are the engine's business, not an attribute mapping."""
    assert default_mappers()["Group"].map(openldap_group()) == {"displayName": "Ventes"}


def test_configured_mappings_replace_and_extend_defaults() -> None:
    """Configured attributes replace the default of the same target (any case) and add new ones."""
    mappers = mappings_from_config(
        {
            "user": {
                "remove": ["title", "NAME.FORMATTED"],
                "attributes": [
                    {"target": "DisplayName", "expression": 'Join(" ", [givenName], ToUpper([sn]))'},
                    {"target": "userName", "expression": 'Replace([userName], "@corp.example", "@example.com")'},
                    {"target": "nickName", "expression": "ToLower(NormalizeDiacritics([givenName]))"},
                    {"target": "userType", "constant": "Employee", "apply": "on_create"},
                    {"target": "preferredLanguage", "source": f"{ENTERPRISE}:organization"},
                ],
            }
        }
    )
    mapped = mappers["User"].map(ad_user())
    assert mapped["DisplayName"] == "Zoë LEFÈVRE"
    assert "displayName" not in mapped
    assert mapped["userName"] == "zoe@example.com"
    assert mapped["nickName"] == "zoe"
    assert mapped["userType"] == "Employee"
    assert mapped["preferredLanguage"] == "Corp SA"
    assert "title" not in mapped
    assert "name.formatted" not in mapped
    assert mappers["Group"].map(openldap_group()) == {"displayName": "Ventes"}


def test_on_create_mappings_only_when_creating() -> None:
    """``apply: on_create`` mappings are left out of updates, ``always`` ones never are."""
    mapper = mappings_from_config(
        {
            "User": {
                "defaults": False,
                "attributes": [
                    {"target": "userName", "source": "userName"},
                    {"target": "password", "constant": "Initial-1", "apply": "on_create"},
                ],
            }
        }
    )["User"]
    assert mapper.map(ad_user()) == {"userName": "zoe@corp.example", "password": "Initial-1"}
    assert mapper.map(ad_user(), creating=False) == {"userName": "zoe@corp.example"}


def test_shorthand_attributes() -> None:
    """``attributes: {target: expression}`` is the same as the list form; defaults: false keeps only those."""
    mapper = mappings_from_config(
        {
            "User": {
                "defaults": False,
                "attributes": {"displayName": 'Join(", ", [sn], [givenName])', "active": {"constant": False}},
            }
        }
    )["User"]
    assert mapper.map(ad_user()) == {"displayName": "Lefèvre, Zoë", "active": False}


def test_single_and_multi_valued_results() -> None:
    """A single-valued mapping takes a list's first value; a multi-valued one always gives a list."""
    resource = {"proxy": "smtp:a@x;smtp:b@x"}
    single = AttributeMapping.from_expression("x", 'Split([proxy], ";")')
    multi = AttributeMapping.from_expression("proxyAddresses", 'Split([proxy], ";")', multi_valued=True)
    scalar = AttributeMapping.from_expression("y", '"one"', multi_valued=True)
    missing = AttributeMapping.from_source("z", "nothing", multi_valued=True)
    assert single.value(resource) == "smtp:a@x"
    assert multi.value(resource) == ["smtp:a@x", "smtp:b@x"]
    assert scalar.value(resource) == ["one"]
    assert missing.value(resource) == []


def test_constant_mapping_values() -> None:
    """Constants of every JSON type map unchanged, strings with quotes and backslashes included."""
    for value in ['say "hi" \\o/', 0, -3, 1.5, True, False, None]:
        assert AttributeMapping.constant("t", value).value({}) == value


def test_later_mapping_of_a_target_wins() -> None:
    """Two mappings of one target (case-insensitive): the later one is used."""
    mapper = ResourceMapper(
        [AttributeMapping.constant("userName", "first"), AttributeMapping.constant("USERNAME", "second")]
    )
    assert mapper.map({}) == {"USERNAME": "second"}


def test_evaluation_error_names_the_target() -> None:
    """A mapping failing on one resource raises MappingError naming the target attribute."""
    mapper = mappings_from_config({"User": {"attributes": {"nickName": "Left([givenName], [sn])"}}})["User"]
    with pytest.raises(MappingError, match=r"^nickName: at offset 0: Left: the length must be a whole number") as info:
        mapper.map(ad_user())
    assert info.value.target == "nickName"


def test_defaults_are_valid_and_cover_both_types() -> None:
    """Default mappings exist for User and Group and every default target is unique."""
    assert set(DEFAULT_MAPPINGS) == {"User", "Group"}
    for mappings in DEFAULT_MAPPINGS.values():
        targets = [m.target.lower() for m in mappings]
        assert len(targets) == len(set(targets))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"User": {"attributes": [{"target": "a", "expression": '"ok"'}, {"target": "b", "expression": "Jon(1)"}]}},
            "User.attributes[1].expression: at offset 0: unknown function 'Jon' (did you mean Join?)",
        ),
        (
            {"Group": {"attributes": {"displayName": 'Join(" ", [cn]'}}},
            "Group.attributes[0].expression: at offset 14: expected ',' or ')'",
        ),
        (
            {"User": {"attributes": [{"target": "x", "source": "emails[type eq ]"}]}},
            "User.attributes[0].source: 'emails[type eq ]': bad attribute reference",
        ),
        (
            {"User": {"attributes": [{"target": "x", "source": "a", "constant": 1}]}},
            "User.attributes[0]: Value error, give exactly one of expression, source and constant (got source, ",
        ),
        ({"User": {"attributes": [{"target": "x"}]}}, "give exactly one"),
        ({"User": {"attributes": [{"target": "x", "expression": '"a"', "apply": "sometimes"}]}}, "attributes[0].apply"),
        ({"User": {"attributes": [{"target": "x", "expresion": '"a"'}]}}, "attributes[0].expresion: Extra inputs"),
        ({"User": {"attributes": [{"target": "not a path!", "expression": '"a"'}]}}, "attributes[0].target"),
        ({"User": {"remove": ["nickName"]}}, "User.remove: 'nickName' is not a default mapping"),
        ({"User": {"defaults": False, "remove": ["title"]}}, "only meaningful with defaults"),
        ({"Users": {}}, "Users: unknown resource type"),
        ({"User": {"bogus": 1}}, "User.bogus: Extra inputs"),
    ],
)
def test_config_errors_name_the_key(config: dict[str, Any], message: str) -> None:
    """Invalid mapping configuration is refused at load with the key, and for expressions the offset."""
    with pytest.raises(MappingConfigError) as info:
        mappings_from_config(config)
    assert message in str(info.value)


def test_attribute_mapping_refuses_bad_input() -> None:
    """Building a mapping in code validates the target path and the expression."""
    with pytest.raises(ValueError, match="not a SCIM attribute path"):
        AttributeMapping.constant("bad target", 1)
    with pytest.raises(ExpressionError):
        AttributeMapping.from_expression("x", "Join(")


# ------------------------------------------------------------------------------------------ matching


def test_anchor_is_the_source_id_by_default() -> None:
    """The anchor is the source SCIM id (the objectGUID as a GUID string for AD)."""
    assert match_anchor(ad_user()) == "00000000-0000-0000-0000-000000000001"
    assert Matcher().anchor(openldap_group()) == "g-1"


def test_anchor_from_another_attribute() -> None:
    """The anchor may be externalId or any SCIM attribute path, e.g. the employee number."""
    resource = {**ad_user(), "externalId": "EXT-7"}
    assert match_anchor(resource, "externalId") == "EXT-7"
    assert Matcher(MatchSettings(anchor=f"{ENTERPRISE}:employeeNumber")).anchor(resource) == "0042"
    assert Matcher(MatchSettings(anchor='emails[type eq "work"].value')).anchor(resource) == "zoe@corp.example"


@pytest.mark.parametrize("resource", [{}, {"id": ""}, {"id": None}, {"id": True}, {"id": {"nested": 1}}])
def test_missing_anchor_is_an_error(resource: dict[str, Any]) -> None:
    """An object without a usable anchor raises MatchError instead of matching on nothing."""
    with pytest.raises(MatchError, match="no id"):
        match_anchor(resource)


def test_matching_attribute_defaults_to_the_same_source_attribute() -> None:
    """With only target_attribute set, the source attribute of the same path gives the value to match."""
    matcher = Matcher(MatchSettings(target_attribute="userName"))
    assert matcher.target_attribute == "userName"
    assert matcher.matching_value(ad_user()) == "zoe@corp.example"
    assert Matcher().matching_value(ad_user()) is None


def test_matching_attribute_from_an_expression() -> None:
    """A source expression computes the matching value; empty or absent values never match."""
    matcher = Matcher(
        MatchSettings(target_attribute="userName", source_expression='Replace([mail], "@corp.example", "@example.com")')
    )
    assert matcher.matching_value(ad_user()) == "zoe@example.com"
    assert matcher.matching_value(ad_user(mail=[])) is None
    empty = Matcher(MatchSettings(target_attribute="nickName", source_expression='""'))
    assert empty.matching_value(ad_user()) is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"target_attribute": "userName", "source_expression": "Join("}, "invalid expression 'Join(': at offset 5"),
        ({"source_expression": "[mail]"}, "needs target_attribute"),
        ({"anchor": "not a path"}, "not a SCIM attribute path"),
        ({"anchor": "id", "extra": 1}, "Extra inputs"),
    ],
)
def test_match_settings_validated(config: dict[str, Any], message: str) -> None:
    """Match settings are checked at load: paths parse, expressions parse (with the offset)."""
    with pytest.raises(ValidationError, match=re.escape(message)):
        MatchSettings.model_validate(config)
