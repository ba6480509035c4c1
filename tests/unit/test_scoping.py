"""Scoping: base DNs (escaped commas included), nested groups with cycles, SCIM conditions, reasons."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from plugins import dn as dnlib
from service.provisioning.scoping import (
    MembershipIndex,
    Scope,
    ScopeDecision,
    ScopeError,
    ScopeSettings,
    dn_key,
    is_at_or_under,
)

LDAP_ENTRY = "urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def user(user_id: str, dn: str | None = None, **attributes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"schemas": [CORE_USER], "id": user_id, "meta": {"resourceType": "User"}, **attributes}
    if dn is not None:
        resource[LDAP_ENTRY] = {"distinguishedName": dn}
    return resource


def group(group_id: str, name: str, *members: str) -> dict[str, Any]:
    return {
        "schemas": [CORE_GROUP],
        "id": group_id,
        "displayName": name,
        "members": [{"value": m, "type": "User"} for m in members],
        "meta": {"resourceType": "Group"},
    }


# ---------------------------------------------------------------------------------------------- DNs


@pytest.mark.parametrize(
    ("dn", "base", "expected"),
    [
        ("uid=zoe,ou=People,dc=example,dc=com", "ou=people,dc=example,dc=com", True),
        ("uid=zoe,ou=People,dc=example,dc=com", "OU=PEOPLE, DC=Example, DC=Com", True),
        ("ou=People,dc=example,dc=com", "ou=People,dc=example,dc=com", True),
        ("uid=zoe,ou=People,dc=example,dc=com", "dc=com", True),
        ("uid=zoe,ou=Staff,dc=example,dc=com", "ou=People,dc=example,dc=com", False),
        ("dc=example,dc=com", "ou=People,dc=example,dc=com", False),
        ("uid=zoe,ou=People,dc=example,dc=org", "ou=People,dc=example,dc=com", False),
        ("uid=zoe,ou=MorePeople,dc=example,dc=com", "ou=People,dc=example,dc=com", False),
        # escaped commas: "Sales, EMEA" is one RDN value, not two RDNs
        ("CN=Lefèvre\\, Zoë,OU=Sales\\, EMEA,DC=corp,DC=example", "ou=Sales\\, EMEA,dc=corp,dc=example", True),
        ("CN=Lefèvre\\, Zoë,OU=Sales\\, EMEA,DC=corp,DC=example", "ou=sales\\2c emea,dc=corp,dc=example", True),
        ("CN=Lefèvre\\, Zoë,OU=Sales\\, EMEA,DC=corp,DC=example", 'OU="Sales, EMEA",DC=corp,DC=example', True),
        ("CN=Lefèvre\\, Zoë,OU=Sales\\, EMEA,DC=corp,DC=example", "OU=EMEA,DC=corp,DC=example", False),
        ("CN=x,OU=EMEA,OU=Sales,DC=corp,DC=example", "ou=Sales\\, EMEA,dc=corp,dc=example", False),
        ("cn=Zoë,ou=Équipe,dc=example", "OU=ÉQUIPE,DC=EXAMPLE", True),
        ("cn=Zo\\C3\\AB,ou=x,dc=example", "cn=zoë,ou=x,dc=example", True),
        ("cn=a+sn=b,ou=x,dc=example", "SN=B+CN=A,ou=x,dc=example", True),
        ("cn=a  b,ou=x,dc=example", "cn=a b,ou=x,dc=example", True),
        ("2.5.4.3=a,2.5.4.11=x,dc=example", "cn=a,ou=x,dc=example", True),
        ("cn=a;ou=x;dc=example", "ou=x,dc=example", True),
    ],
)
def test_dn_at_or_under(dn: str, base: str, expected: bool) -> None:
    """A DN is at or under a base DN by whole RDNs, case-insensitively, with escapes decoded."""
    assert is_at_or_under(dn_key(dn), dn_key(base)) is expected


@pytest.mark.parametrize("text", ["no equals sign", "cn=a,", "=x,dc=y", "cn=a\\", 'cn="open,dc=x', "cn=\\ff\\fe"])
def test_invalid_dns(text: str) -> None:
    """Text that is not a DN raises ValueError with what is wrong."""
    with pytest.raises(ValueError, match="invalid DN"):
        dn_key(text)


_VALUE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda v: v.strip() != ""
)
_RDN = st.tuples(st.sampled_from(["cn", "ou", "dc", "uid", "o"]), _VALUE)


@settings(max_examples=300)
@given(st.lists(_RDN, min_size=1, max_size=5), st.lists(_RDN, max_size=3))
def test_dn_keys_agree_with_the_plugins_dn_module(base: list[tuple[str, str]], leaf: list[tuple[str, str]]) -> None:
    """Escaped by plugins.dn and parsed here, every DN is under its base and normalises like plugins.dn does."""
    base_dn = ",".join(f"{t}={dnlib.escape_value(v)}" for t, v in base)
    full_dn = ",".join([*(f"{t}={dnlib.escape_value(v)}" for t, v in leaf), base_dn])
    assert is_at_or_under(dn_key(full_dn), dn_key(base_dn))
    assert dn_key(full_dn.upper() if full_dn.isascii() else full_dn)[-len(base) :] == dn_key(base_dn)
    same = dnlib.normalize(full_dn) == dnlib.normalize(base_dn)
    assert (dn_key(full_dn) == dn_key(base_dn)) == same


# ---------------------------------------------------------------------------------------- membership


def test_direct_and_nested_membership() -> None:
    """Members count directly and through nested groups, and only directly when nested is off."""
    index = MembershipIndex()
    index.add_group("g-all", ["g-eu", "u-1"], "All Staff")
    index.add_group("g-eu", ["g-fr"], "EU")
    index.add_group("g-fr", ["u-2"], "France")
    assert index.is_member("u-1", ["g-all"])
    assert index.is_member("u-2", ["g-all"])
    assert index.is_member("u-2", ["All Staff"])
    assert index.is_member("u-2", ["all staff"])
    assert not index.is_member("u-2", ["g-all"], nested=False)
    assert index.is_member("u-2", ["g-fr"], nested=False)
    assert index.is_member("g-fr", ["g-all"])
    assert not index.is_member("u-3", ["g-all"])
    assert not index.is_member("u-2", ["No Such Group"])
    assert index.path("u-2", ["g-all"]) == ["g-fr", "g-eu", "g-all"]


def test_membership_cycle_terminates() -> None:
    """Groups that contain each other in a cycle neither loop nor make outsiders members."""
    index = MembershipIndex()
    index.add_group("a", ["b", "u-1"], "A")
    index.add_group("b", ["c"], "B")
    index.add_group("c", ["a", "u-2"], "C")
    index.add_group("z", ["u-9"], "Z")
    assert index.is_member("u-1", ["c"])
    assert index.is_member("u-2", ["b"])
    assert index.is_member("a", ["a"])  # a is in c, which is in b, which is in a
    assert not index.is_member("u-1", ["z"])
    assert not index.is_member("u-9", ["a"])


def test_self_membership_cycle() -> None:
    """A group listing itself as a member is handled."""
    index = MembershipIndex()
    index.add_group("a", ["a", "u-1"])
    assert index.is_member("a", ["a"])
    assert index.is_member("u-1", ["a"])
    assert not index.is_member("u-2", ["a"])


def test_add_group_again_replaces_members() -> None:
    """Recording a group a second time replaces its members (a removed member is no longer in it)."""
    index = MembershipIndex()
    index.add_group("g", ["u-1", "u-2"])
    index.add_group("g", ["u-2"])
    assert not index.is_member("u-1", ["g"])
    assert index.is_member("u-2", ["g"])


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=30), st.integers(0, 7), st.integers(0, 7))
def test_nested_membership_is_reachability(edges: list[tuple[int, int]], start: int, goal: int) -> None:
    """Nested membership equals reachability in the member → group graph, for any graph, cycles included."""
    index = MembershipIndex()
    members: dict[int, set[int]] = {}
    for parent, child in edges:
        members.setdefault(parent, set()).add(child)
    for parent, children in members.items():
        index.add_group(f"g{parent}", [f"g{c}" for c in children])
    reached: set[int] = set()
    frontier = [p for p, cs in members.items() if start in cs]
    while frontier:
        node = frontier.pop()
        if node not in reached:
            reached.add(node)
            frontier.extend(p for p, cs in members.items() if node in cs)
    assert index.is_member(f"g{start}", [f"g{goal}"]) is (goal in reached)


def test_index_from_scim_groups() -> None:
    """The index reads SCIM Group resources: ids, displayNames and members[].value."""
    index = MembershipIndex.from_groups([group("g-1", "Sales", "u-1", "g-2"), group("g-2", "Sales EU", "u-2")])
    assert index.is_member("u-2", ["Sales"])
    assert index.resolve(["sales eu", "g-1", "nope"]) == {"g-1", "g-2"}
    assert index.name("g-2") == "Sales EU"


# -------------------------------------------------------------------------------------------- scope


def test_no_rules_everything_in_scope() -> None:
    """A scope with no rules puts every object in scope and says so."""
    decision = Scope().decide(user("u-1"))
    assert decision == ScopeDecision(True, ["no scoping rules: every object is in scope"])


def test_scope_by_base_dn() -> None:
    """Objects at or under one of the base DNs are in scope, others and DN-less ones are not, with reasons."""
    scope = Scope(ScopeSettings(base_dns=["OU=Sales\\, EMEA,DC=corp,DC=example", "ou=IT,dc=corp,dc=example"]))
    inside = scope.decide(user("u-1", "CN=Lefèvre\\, Zoë,OU=Sales\\, EMEA,DC=corp,DC=example"))
    assert inside.in_scope
    assert inside.reasons == [
        "DN 'CN=Lefèvre\\\\, Zoë,OU=Sales\\\\, EMEA,DC=corp,DC=example' is under base DN "
        "'OU=Sales\\\\, EMEA,DC=corp,DC=example'"
    ]
    assert scope.decide(user("u-2", "cn=Bob,ou=it,dc=corp,dc=example")).in_scope
    outside = scope.decide(user("u-3", "CN=Eve,OU=EMEA,DC=corp,DC=example"))
    assert not outside.in_scope
    assert "under none of the base DNs" in outside.reason
    missing = scope.decide(user("u-4"))
    assert not missing.in_scope
    assert "no distinguishedName" in missing.reason
    broken = scope.decide(user("u-5", "not a dn"))
    assert not broken.in_scope
    assert "invalid DN" in broken.reason


def test_scope_by_group_nested_with_cycle() -> None:
    """Members of a scoping group, nested through a cycle, are in scope; the reason shows the chain."""
    index = MembershipIndex.from_groups(
        [
            group("g-sales", "Sales", "g-eu"),
            group("g-eu", "Sales EU", "g-fr", "u-1"),
            group("g-fr", "Sales FR", "u-2", "g-sales"),  # cycle back to Sales
            group("g-other", "Other", "u-3"),
        ]
    )
    scope = Scope(ScopeSettings(groups=["Sales"]))
    assert scope.uses_membership
    direct = scope.decide(user("u-1"), index)
    assert direct == ScopeDecision(True, ["is a member of 'Sales' through 'Sales EU'"])
    deep = scope.decide(user("u-2"), index)
    assert deep.reasons == ["is a member of 'Sales' through 'Sales FR' → 'Sales EU'"]
    assert not scope.decide(user("u-3"), index).in_scope
    itself = scope.decide(group("g-sales", "Sales"), index)
    assert itself == ScopeDecision(True, ["is the scoping group 'Sales'"])
    assert scope.decide(group("g-fr", "Sales FR"), index).in_scope


def test_scope_by_group_direct_only() -> None:
    """With nested off only direct members are in scope."""
    index = MembershipIndex.from_groups([group("g-1", "Sales", "g-2", "u-1"), group("g-2", "Sub", "u-2")])
    scope = Scope(ScopeSettings(groups=["g-1"], nested=False))
    assert scope.decide(user("u-1"), index).in_scope
    refused = scope.decide(user("u-2"), index)
    assert not refused.in_scope
    assert refused.reasons == ["is a member of none of the scoping groups (g-1) directly"]


def test_scoping_group_itself_can_be_excluded() -> None:
    """include_scoping_groups false leaves the scoping group out unless it is a member of another."""
    index = MembershipIndex.from_groups([group("g-1", "Sales", "u-1")])
    scope = Scope(ScopeSettings(groups=["Sales"], include_scoping_groups=False))
    assert not scope.decide(group("g-1", "Sales"), index).in_scope
    assert scope.decide(user("u-1"), index).in_scope


def test_group_scope_without_index_fails_loudly() -> None:
    """Group scoping without a membership index raises instead of putting every object out of scope."""
    with pytest.raises(ScopeError):
        Scope(ScopeSettings(groups=["Sales"])).decide(user("u-1"))


def test_scope_by_conditions() -> None:
    """Every SCIM filter condition must hold for Users; Groups use group_conditions."""
    scope = Scope(
        ScopeSettings(
            conditions=[
                'userType eq "Employee"',
                "active eq true",
                'emails[type eq "work" and value ew "@corp.example"]',
            ],
            group_conditions=['displayName sw "Sales"'],
        )
    )
    employee = user("u-1", userType="employee", active=True, emails=[{"type": "work", "value": "zoe@CORP.example"}])
    decision = scope.decide(employee)
    assert decision.in_scope
    assert decision.reasons == [
        "condition 'userType eq \"Employee\"' holds",
        "condition 'active eq true' holds",
        'condition \'emails[type eq "work" and value ew "@corp.example"]\' holds',
    ]
    contractor = scope.decide({**employee, "userType": "Contractor"})
    assert not contractor.in_scope
    assert "condition 'userType eq \"Employee\"' does not hold" in contractor.reasons
    assert not scope.decide({**employee, "active": False}).in_scope
    assert scope.decide(group("g-1", "Sales EU")).in_scope
    assert not scope.decide(group("g-2", "IT")).in_scope


def test_condition_that_cannot_apply_is_out_of_scope() -> None:
    """A condition RFC 7644 cannot apply to the data (ordering a boolean) is not met, with the reason."""
    scope = Scope(ScopeSettings(conditions=["active gt 1"]))
    decision = scope.decide(user("u-1", active=True))
    assert not decision.in_scope
    assert "cannot apply" in decision.reason


def test_all_rules_combine() -> None:
    """With DN, group and conditions set, an object is in scope only if all hold; each gives a reason."""
    index = MembershipIndex.from_groups([group("g-1", "Sales", "u-1", "u-2", "u-3")])
    scope = Scope(ScopeSettings(base_dns=["ou=people,dc=x"], groups=["Sales"], conditions=["active eq true"]))
    ok = scope.decide(user("u-1", "uid=a,ou=people,dc=x", active=True), index)
    assert ok.in_scope
    assert len(ok.reasons) == 3
    assert not scope.decide(user("u-2", "uid=b,ou=other,dc=x", active=True), index).in_scope
    assert not scope.decide(user("u-3", "uid=c,ou=people,dc=x", active=False), index).in_scope
    assert not scope.decide(user("u-4", "uid=d,ou=people,dc=x", active=True), index).in_scope


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"base_dns": ["not a dn"]}, "invalid DN"),
        ({"base_dns": [""]}, "must not be empty"),
        ({"conditions": ["userName eq"]}, "invalid filter at offset 11"),
        ({"conditions": ["active gt true"]}, "cannot order"),
        ({"group_conditions": ["displayName co 1"]}, "needs a string value"),
        ({"out_of_scope": "archive"}, "out_of_scope"),
        ({"base_dn": ["dc=x"]}, "Extra inputs"),
    ],
)
def test_invalid_settings(config: dict[str, Any], message: str) -> None:
    """Bad scoping configuration is refused at load, naming the key and the problem."""
    with pytest.raises(ValidationError, match=message):
        Scope.from_config(config)


def test_settings_defaults_and_frozen() -> None:
    """Defaults scope everything and disable objects leaving scope; settings are immutable."""
    settings_ = ScopeSettings()
    assert settings_.out_of_scope == "disable"
    assert not Scope(settings_).uses_membership
    with pytest.raises(ValidationError):
        settings_.out_of_scope = "delete"  # type: ignore[misc]
    for name, info in ScopeSettings.model_fields.items():
        assert info.description, name
