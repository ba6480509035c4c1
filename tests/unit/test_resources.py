"""SCIM resources ↔ LDAP values: how ``diff`` turns a new resource into LDAP modifications."""

from __future__ import annotations

from agent.scim.profile import load_profile
from agent.scim.resources import diff
from plugins.directory import Attributes, Entry, Modification, ModOp


def test_single_values_behind_multi_valued_scim_attributes_are_replaced() -> None:
    """A changed email or manager is one REPLACE: AD's mail and manager are single-valued, and a delete
    plus an add of one value in one modify is refused there."""
    users = load_profile("ad").users
    entry = Entry("CN=a,CN=Users,DC=x", Attributes({"mail": ["old@x"], "manager": ["CN=m1,CN=Users,DC=x"]}))
    changes = diff(users, entry, {"mail": ["new@x"], "manager": ["CN=m2,CN=Users,DC=x"]})
    assert changes == [
        Modification(ModOp.REPLACE, "mail", ("new@x",)),
        Modification(ModOp.REPLACE, "manager", ("CN=m2,CN=Users,DC=x",)),
    ]


def test_members_change_value_by_value() -> None:
    """Group members are added and deleted one value at a time, never replaced whole."""
    groups = load_profile("ad").groups
    entry = Entry("CN=g,CN=Users,DC=x", Attributes({"member": ["CN=a,DC=x", "CN=b,DC=x"]}))
    changes = diff(groups, entry, {"member": ["cn=A,dc=x", "CN=c,DC=x"]})
    assert changes == [
        Modification(ModOp.DELETE, "member", ("CN=b,DC=x",)),
        Modification(ModOp.ADD, "member", ("CN=c,DC=x",)),
    ]


def test_attributes_get_is_case_insensitive_with_mapping_defaults() -> None:
    """Attributes.get finds a name in any case, gives None or the default for an absent one, and the
    values themselves (what Mapping.get through __getitem__ gives)."""
    attributes = Attributes({"givenName": ["Ada"], "objectClass": ["top", "person"]})
    assert attributes.get("GIVENNAME") == ["Ada"]
    assert attributes.get("objectclass") is attributes["objectClass"]
    assert attributes.get("sn") is None
    assert attributes.get("sn", []) == []
    assert Entry("cn=x", attributes).get("GivenName") == ["Ada"]
    assert Entry("cn=x", attributes).get("mail") == []
