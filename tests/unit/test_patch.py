"""The SCIM PATCH engine: RFC 7644 §3.5.2 add/replace/remove, errors, touched attributes, member changes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.scim.patch import (
    PatchOperation,
    PatchResult,
    ValueChanges,
    _canonical,
    _copy,
    _same,
    apply_patch,
    parse_operations,
    patched,
)
from protocol.errors import ScimError
from protocol.scimfilter import parse_path

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(operations)}


def patch(resource: dict[str, Any], *operations: dict[str, Any]) -> PatchResult:
    return apply_patch(resource, body(*operations))


def error_of(resource: dict[str, Any], *operations: dict[str, Any]) -> ScimError:
    with pytest.raises(ScimError) as caught:
        patch(resource, *operations)
    return caught.value


def user() -> dict[str, Any]:
    return {
        "schemas": [CORE_USER],
        "id": "u1",
        "userName": "bjensen",
        "active": True,
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": True},
            {"value": "babs@jensen.org", "type": "home"},
        ],
        "meta": {"resourceType": "User", "version": 'W/"1"'},
    }


def group(*members: str) -> dict[str, Any]:
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": "g1", "displayName": "G",
            "members": [{"value": m} for m in members]}  # fmt: skip


# ------------------------------------------------------------------------------------------- add


def test_add_members_appends_without_duplicates() -> None:
    """Adding members appends new values, merges an equal one (case-insensitively) and reports only the new."""
    result = patch(group("m1", "m2"), {"op": "add", "path": "members", "value": [{"value": "m3"}, {"value": "M1"}]})
    assert result.resource["members"] == [{"value": "m1"}, {"value": "m2"}, {"value": "m3"}]
    assert result.member_changes == ValueChanges(added=("m3",), removed=())
    assert result.touched == {"members"}


def test_add_to_missing_attribute_sets_it() -> None:
    """Adding an attribute the resource lacks creates it (members included)."""
    result = patch({"id": "g"}, {"op": "Add", "path": "members", "value": [{"value": "a", "display": "A"}]})
    assert result.resource["members"] == [{"value": "a", "display": "A"}]
    assert result.member_changes.added == ("a",)


def test_add_complex_merges_sub_attributes() -> None:
    """Adding to a complex attribute merges sub-attributes and leaves the others alone."""
    result = patch(user(), {"op": "add", "path": "name", "value": {"middleName": "Jane", "familyName": "J"}})
    assert result.resource["name"] == {"givenName": "Barbara", "familyName": "J", "middleName": "Jane"}
    assert result.touched == {"name"}


def test_add_with_filter_seeds_a_new_value() -> None:
    """``emails[type eq "other"].value`` with no such email appends ``{"type": "other", "value": …}``."""
    result = patch(user(), {"op": "Add", "path": 'emails[type eq "other"].value', "value": "o@x.org"})
    assert result.resource["emails"][-1] == {"type": "other", "value": "o@x.org"}
    assert result.changes_of("EMAILS").added == ("o@x.org",)


def test_add_with_filter_sets_sub_attribute_on_match() -> None:
    """With a matching value, add sets the sub-attribute on it."""
    result = patch(user(), {"op": "add", "path": 'emails[type eq "home"].display', "value": "Babs"})
    assert result.resource["emails"][1] == {"value": "babs@jensen.org", "type": "home", "display": "Babs"}


def test_add_unseedable_filter_is_no_target() -> None:
    """An add whose filter matches nothing and is not a conjunction of eq comparisons is noTarget."""
    error = error_of(user(), {"op": "add", "path": 'emails[value co "zzz"].display', "value": "x"})
    assert error.scim_type == "noTarget"


def test_primary_moves() -> None:
    """A value added as primary turns primary off on the other values (RFC 7644 §3.5.2)."""
    result = patch(user(), {"op": "add", "path": "emails", "value": [{"value": "n@x", "primary": True}]})
    assert [e.get("primary") for e in result.resource["emails"]] == [False, None, True]


# --------------------------------------------------------------------------------------- replace


def test_replace_without_path_merges() -> None:
    """A no-path replace sets each attribute, merging complex ones, plus dotted and URN-qualified keys."""
    value = {
        "active": False,
        "name": {"familyName": "Smith"},
        "name.givenName": "Babs",
        f"{ENTERPRISE}:department": "R&D",
        ENTERPRISE: {"employeeNumber": "42"},
    }
    result = patch(user(), {"op": "replace", "value": value})
    assert result.resource["active"] is False
    assert result.resource["name"] == {"givenName": "Babs", "familyName": "Smith"}
    assert result.resource[ENTERPRISE] == {"department": "R&D", "employeeNumber": "42"}
    assert ENTERPRISE in result.resource["schemas"]
    assert result.touched == {
        "active",
        "name",
        "schemas",
        f"{ENTERPRISE}:department",
        f"{ENTERPRISE}:employeeNumber",
    }


def test_replace_multi_valued_replaces_all() -> None:
    """Replacing members without a filter replaces the whole set; the change is reported as adds and removes."""
    result = patch(group("m1", "m2"), {"op": "replace", "path": "members", "value": [{"value": "m2"}, {"value": "m3"}]})
    assert result.resource["members"] == [{"value": "m2"}, {"value": "m3"}]
    assert result.member_changes == ValueChanges(added=("m3",), removed=("m1",))


def test_replace_filtered_sub_attribute() -> None:
    """Replace with ``emails[type eq "work"].value`` changes only the matching values' sub-attribute."""
    result = patch(user(), {"op": "replace", "path": 'emails[type eq "work"].value', "value": "new@example.com"})
    assert [e["value"] for e in result.resource["emails"]] == ["new@example.com", "babs@jensen.org"]
    assert result.changes_of("emails") == ValueChanges(added=("new@example.com",), removed=("bjensen@example.com",))


def test_replace_filtered_whole_value() -> None:
    """Replace with a filter and no sub-attribute replaces each matching value whole."""
    result = patch(
        user(), {"op": "replace", "path": 'emails[type eq "home"]', "value": {"value": "h@x", "type": "home"}}
    )
    assert result.resource["emails"][1] == {"value": "h@x", "type": "home"}


def test_replace_filter_matching_nothing_is_no_target() -> None:
    """RFC 7644 §3.5.2.3: a replace whose value filter matches nothing fails with noTarget."""
    error = error_of(user(), {"op": "replace", "path": 'emails[type eq "fax"].value', "value": "x"})
    assert (error.scim_type, error.status) == ("noTarget", 400)
    assert error.detail.startswith("Operations[0]:")


def test_replace_missing_attribute_adds_it() -> None:
    """Replace of an absent attribute behaves as add."""
    assert patch(user(), {"op": "replace", "path": "nickName", "value": "Babs"}).resource["nickName"] == "Babs"


def test_replace_null_unassigns() -> None:
    """Replace with null removes the attribute."""
    assert "name" not in patch(user(), {"op": "replace", "path": "name", "value": None}).resource


def test_entra_boolean_strings() -> None:
    """Entra's ``"False"`` written over a boolean is stored as a boolean."""
    assert patch(user(), {"op": "Replace", "path": "active", "value": "False"}).resource["active"] is False


def test_extension_attribute_paths() -> None:
    """URN-qualified paths create, change and remove extension attributes, keeping ``schemas`` in step."""
    created = patch(user(), {"op": "add", "path": f"{ENTERPRISE}:manager.value", "value": "boss"})
    assert created.resource[ENTERPRISE] == {"manager": {"value": "boss"}}
    assert created.resource["schemas"] == [CORE_USER, ENTERPRISE]
    assert f"{ENTERPRISE}:manager" in created.touched
    removed = patch(created.resource, {"op": "remove", "path": f"{ENTERPRISE}:manager"})
    assert ENTERPRISE not in removed.resource
    assert removed.resource["schemas"] == [CORE_USER]


def test_core_urn_prefix_is_top_level() -> None:
    """``urn:…:core:2.0:User:userName`` is the top-level userName."""
    result = patch(user(), {"op": "replace", "path": f"{CORE_USER}:userName", "value": "babs"})
    assert result.resource["userName"] == "babs"
    assert result.touched == {"userName"}


def test_names_match_case_insensitively_and_keep_spelling() -> None:
    """A path in another case edits the existing attribute under its existing spelling."""
    result = patch(user(), {"op": "replace", "path": "USERNAME", "value": "x"})
    assert result.resource["userName"] == "x"
    assert "USERNAME" not in result.resource


# ---------------------------------------------------------------------------------------- remove


def test_remove_member_by_filter() -> None:
    """``members[value eq "…"]`` removes just that member and reports it."""
    result = patch(group("m1", "m2"), {"op": "remove", "path": 'members[value eq "m1"]'})
    assert result.resource["members"] == [{"value": "m2"}]
    assert result.member_changes == ValueChanges(added=(), removed=("m1",))


def test_remove_members_entra_style_value() -> None:
    """Entra's remove with ``path: members`` and a value list removes only those members."""
    result = patch(
        group("m1", "m2", "m3"), {"op": "Remove", "path": "members", "value": [{"value": "m1"}, {"value": "m3"}]}
    )
    assert result.resource["members"] == [{"value": "m2"}]
    assert result.member_changes.removed == ("m1", "m3")


def test_remove_without_filter_clears_multi_valued() -> None:
    """Removing a multi-valued attribute without a filter removes all its values."""
    result = patch(group("m1", "m2"), {"op": "remove", "path": "members"})
    assert "members" not in result.resource
    assert result.member_changes.removed == ("m1", "m2")


def test_remove_last_filtered_value_unassigns() -> None:
    """When a filter removes the last value, the attribute is unassigned."""
    assert "members" not in patch(group("m1"), {"op": "remove", "path": 'members[value eq "m1"]'}).resource


def test_remove_sub_attribute() -> None:
    """Removing ``name.familyName`` leaves the rest of ``name``; removing the last sub-attribute removes ``name``."""
    once = patch(user(), {"op": "remove", "path": "name.familyName"})
    assert once.resource["name"] == {"givenName": "Barbara"}
    twice = patch(once.resource, {"op": "remove", "path": "name.givenName"})
    assert "name" not in twice.resource


def test_remove_nothing_matching_is_a_no_op() -> None:
    """A remove whose filter matches nothing changes nothing (safe to repeat)."""
    result = patch(group("m1"), {"op": "remove", "path": 'members[value eq "zz"]'})
    assert result.resource == group("m1")
    assert result.touched == frozenset()


def test_remove_without_path_is_no_target() -> None:
    """RFC 7644 §3.5.2.2: remove without a path is noTarget."""
    assert error_of(user(), {"op": "remove"}).scim_type == "noTarget"


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("operation", "scim_type"),
    [
        ({"op": "replace", "path": "id", "value": "u2"}, "mutability"),
        ({"op": "remove", "path": "id"}, "mutability"),
        ({"op": "replace", "path": "meta.version", "value": 'W/"2"'}, "mutability"),
        ({"op": "add", "value": {"id": "u9"}}, "mutability"),
        ({"op": "add", "path": "emails[type eq", "value": "x"}, "invalidPath"),
        ({"op": "add", "path": "userName.first", "value": "x"}, "invalidPath"),
        ({"op": "add", "path": 'userName[value eq "x"]', "value": "x"}, "invalidPath"),
        ({"op": "add", "path": 7, "value": "x"}, "invalidPath"),
        ({"op": "add", "path": "nickName"}, "invalidValue"),
        ({"op": "replace", "value": "not an object"}, "invalidValue"),
        ({"op": "replace", "path": 'emails[type eq "work"]', "value": "x"}, "invalidValue"),
        ({"op": "frobnicate", "path": "x", "value": 1}, "invalidSyntax"),
    ],
)
def test_error_types(operation: dict[str, Any], scim_type: str) -> None:
    """Each failure carries the RFC 7644 scimType that describes it."""
    assert error_of(user(), operation).scim_type == scim_type


def test_same_id_is_not_a_change() -> None:
    """A no-path value that repeats the current id is accepted: nothing read-only changes."""
    assert patch(user(), {"op": "replace", "value": {"id": "u1", "nickName": "B"}}).resource["nickName"] == "B"


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"Operations": []},
        {"schemas": ["urn:wrong"], "Operations": [{"op": "add", "path": "a", "value": 1}]},
        {"Operations": "add"},
        {"Operations": ["add"]},
    ],
)
def test_malformed_bodies_are_invalid_syntax(raw: Any) -> None:
    """A body that is not a PatchOp with a non-empty Operations array is invalidSyntax."""
    with pytest.raises(ScimError) as caught:
        parse_operations(raw)
    assert caught.value.scim_type == "invalidSyntax"


def test_parse_operations() -> None:
    """Operations parse with case-insensitive op names, parsed paths, and null told apart from absent values."""
    ops = parse_operations(body({"op": "Add", "path": "members", "value": None}, {"op": "REMOVE", "path": "x"}))
    assert ops == (
        PatchOperation("add", parse_path("members"), None, has_value=True),
        PatchOperation("remove", parse_path("x"), None, has_value=False),
    )


def test_failure_is_all_or_nothing() -> None:
    """When a later operation fails, nothing is returned and the input is unchanged."""
    resource = group("m1")
    error = error_of(resource, {"op": "add", "path": "members", "value": [{"value": "m2"}]}, {"op": "remove"})
    assert error.detail.startswith("Operations[1]:")
    assert resource == group("m1")


# ------------------------------------------------------------------------------------ properties

member_ids = st.text(alphabet="abcdefXYZ0123-", min_size=1, max_size=6)
member_sets = st.lists(member_ids, max_size=6, unique_by=str.casefold)
plain_values = st.one_of(st.text(max_size=5), st.integers(-3, 3), st.booleans())
attribute_names = st.sampled_from(["nickName", "title", "displayName", "userType"])
no_path_values = st.dictionaries(
    attribute_names | st.sampled_from(["name"]),
    plain_values,
    min_size=1,
    max_size=3,
).map(lambda d: {k: ({"givenName": v} if k == "name" else v) for k, v in d.items()})


@settings(max_examples=200)
@given(member_sets, member_ids)
def test_add_then_remove_member_restores(members: list[str], new: str) -> None:
    """Adding a member that was not there and removing it again leaves the members as they were."""
    if any(m.casefold() == new.casefold() for m in members):
        return
    start = group(*members)
    added = patch(start, {"op": "add", "path": "members", "value": [{"value": new}]})
    assert added.member_changes == ValueChanges(added=(new,), removed=())
    removed = patch(added.resource, {"op": "remove", "path": f'members[value eq "{new}"]'})
    assert removed.resource.get("members", []) == start["members"]
    assert removed.member_changes == ValueChanges(added=(), removed=(new,))


@settings(max_examples=200)
@given(member_sets, st.lists(member_ids, max_size=4), st.lists(member_ids, max_size=4))
def test_member_changes_match_the_set_difference(members: list[str], adds: list[str], removes: list[str]) -> None:
    """Reported member changes are exactly the difference between the member sets before and after."""
    start = group(*members)
    result = patch(
        start,
        {"op": "add", "path": "members", "value": [{"value": v} for v in adds]},
        {"op": "remove", "path": "members", "value": [{"value": v} for v in removes]},
    )
    before = {m.casefold() for m in members}
    after = {m["value"].casefold() for m in result.resource.get("members", [])}
    assert {v.casefold() for v in result.member_changes.added} == after - before
    assert {v.casefold() for v in result.member_changes.removed} == before - after
    assert len(after) == len(result.resource.get("members", []))  # never a duplicate


@settings(max_examples=200)
@given(no_path_values, st.sampled_from(["add", "replace", "Replace"]))
def test_patch_never_mutates_input(value: dict[str, Any], op: str) -> None:
    """Applying a patch leaves the input resource and the operation value untouched, and shares nothing."""
    resource = user()
    resource_copy = copy.deepcopy(resource)
    value_copy = copy.deepcopy(value)
    result = patch(resource, {"op": op, "value": value}, {"op": "add", "path": "emails", "value": [{"value": "q@x"}]})
    assert resource == resource_copy
    assert value == value_copy
    result.resource["name"]["givenName"] = "changed"
    result.resource["emails"].append({"value": "z"})
    assert resource == resource_copy
    assert value == value_copy


@settings(max_examples=200)
@given(no_path_values)
def test_replace_without_path_is_idempotent(value: dict[str, Any]) -> None:
    """Applying the same no-path replace twice gives the same resource as once, and touches nothing the second time."""
    once = patch(user(), {"op": "replace", "value": value})
    twice = patch(once.resource, {"op": "replace", "value": value})
    assert twice.resource == once.resource
    assert twice.touched == frozenset()


@settings(max_examples=100)
@given(no_path_values)
def test_touched_is_exactly_what_changed(value: dict[str, Any]) -> None:
    """``touched`` names every attribute whose value differs from the input, and only those."""
    start = user()
    result = patch(start, {"op": "add", "value": value})
    changed = {k for k in set(start) | set(result.resource) if start.get(k) != result.resource.get(k)}
    assert result.touched == changed


_json_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.sampled_from(["a", "A", ""])
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["v", "V", "w"]), inner, max_size=2),
    max_leaves=8,
)


@settings(max_examples=500)
@given(_json_values, _json_values)
def test_the_equality_shortcut_never_hides_a_change(left: Any, right: Any) -> None:
    """Values the diff calls the same without printing them also print the same."""
    if _same(left, right):
        assert _canonical(left) == _canonical(right)


def test_the_equality_shortcut_tells_json_apart() -> None:
    """True is not 1 and 0.0 is not -0.0 to the shortcut, though Python calls them equal; copies are the same."""
    assert not _same(True, 1)
    assert not _same(0.0, -0.0)
    assert not _same({"v": [1]}, {"V": [1]})  # keys in another case: left to the canonical comparison
    assert _same(user(), copy.deepcopy(user()))


@settings(max_examples=200)
@given(st.sampled_from(["Barbara", "barbara", True, 1, 1.0, None]), st.sampled_from(["title", "nickName", "active"]))
def test_patched_is_apply_patch_without_the_diff(value: Any, path: str) -> None:
    """``patched`` returns the resource ``apply_patch`` does, for any value written."""
    operations = body({"op": "replace", "path": path, "value": value})
    assert patched(user(), operations) == apply_patch(user(), operations).resource


_JSON_DATA = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.tuples(inner) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(_JSON_DATA)
@settings(max_examples=300)
def test_a_copy_of_json_data_is_equal_and_shares_nothing_mutable(value: Any) -> None:
    """_copy gives equal data (tuples as lists) in which no dict or list is one of the original's."""

    def plain(data: Any) -> Any:
        if isinstance(data, dict):
            return {k: plain(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [plain(v) for v in data]
        return data

    def containers(data: Any) -> list[int]:
        if isinstance(data, dict):
            return [id(data), *(i for v in data.values() for i in containers(v))]
        if isinstance(data, list):
            return [id(data), *(i for v in data for i in containers(v))]
        if isinstance(data, tuple):
            return [i for v in data for i in containers(v)]
        return []

    copied = _copy(value)
    assert copied == plain(value)
    assert not set(containers(copied)) & set(containers(value))


@settings(max_examples=200)
@given(no_path_values, st.sampled_from(["add", "replace", "Replace"]), st.sampled_from(["title", "emails", "name"]))
def test_a_consumed_resource_is_patched_as_a_copy_would_be(value: dict[str, Any], op: str, path: str) -> None:
    """``patched(…, consume=True)`` (the handler's resource, changed in place) gives what ``patched`` gives
    on a copy, extension containers and ``schemas`` included, and fails where it fails."""
    operations = body(
        {"op": op, "value": value},
        {"op": "remove", "path": path},
        {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "d"},
    )

    def outcome(consume: bool) -> Any:
        try:
            return patched(user(), operations, consume=consume)
        except ScimError as error:
            return error.to_body()

    assert outcome(consume=True) == outcome(consume=False)
