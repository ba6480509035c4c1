"""The ``Target`` behaviour suite, written once and run against every target.

Subclass ``TargetBehaviour`` in a ``test_*.py`` module and provide a ``target`` fixture (an opened
``Target``; close it on teardown). Class attributes say what the target enforces on its own:

- ``unique_anchor``: creating a second object with a provisioned anchor is a ``TargetConflictError``
  (the embedded store; a SCIM service keeps ``externalId`` but need not make it unique);
- ``rejects_user_without_name``: a User without ``userName`` is a ``TargetRejectedError`` (SCIM).

Every test uses fresh anchors and names, so the suite may run against a shared, non-empty target.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from service.provisioning.targets.base import (
    Target,
    TargetConflictError,
    TargetNotFoundError,
    TargetObject,
    TargetRejectedError,
)

WORK_EMAIL = 'emails[type eq "work"].value'
DEPARTMENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"


def fresh(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def user(name: str, **extra: Any) -> dict[str, Any]:
    return {"userName": name, "name.givenName": "Ada", "name.familyName": name, "displayName": f"Ada {name}", **extra}


def assert_has(obj: TargetObject, expected: Mapping[str, Any]) -> None:
    """``obj`` carries every expected attribute with the expected value (a target may add others)."""
    missing = {k: (v, obj.attributes.get(k)) for k, v in expected.items() if obj.attributes.get(k) != v}
    assert not missing, f"attributes differ (expected, got): {missing}; object has {dict(obj.attributes)}"


class TargetBehaviour:
    unique_anchor: ClassVar[bool] = False
    rejects_user_without_name: ClassVar[bool] = True

    async def new_user(self, target: Target, **extra: Any) -> TargetObject:
        name = fresh("u")
        return await target.create("User", fresh("anchor-"), user(name, **extra))

    async def new_group(self, target: Target) -> TargetObject:
        return await target.create("Group", fresh("anchor-"), {"displayName": fresh("g")})

    # ------------------------------------------------------------------ create and read

    async def test_create_then_get_by_anchor(self, target: Target) -> None:
        """A created user is found again by its anchor, with the same id and attributes."""
        anchor, name = fresh("anchor-"), fresh("u")
        created = await target.create("User", anchor, user(name))
        found = await target.get_by_anchor("User", anchor)
        assert found is not None
        assert (found.id, found.anchor, found.resource_type) == (created.id, anchor, "User")
        assert found.active
        assert_has(found, user(name))

    async def test_absent_anchor_is_none(self, target: Target) -> None:
        """Asking for an anchor never provisioned answers None, not an error."""
        assert await target.get_by_anchor("User", fresh("nobody-")) is None
        assert await target.get_by_anchor("Group", fresh("nogroup-")) is None

    async def test_anchor_is_per_resource_type(self, target: Target) -> None:
        """A user's anchor does not find a group, and the other way round."""
        created = await self.new_user(target)
        assert created.anchor is not None
        assert await target.get_by_anchor("Group", created.anchor) is None

    async def test_multi_valued_and_extension_paths_round_trip(self, target: Target) -> None:
        """Attributes keyed by a typed multi-valued path and an extension URN come back under the same keys."""
        name = fresh("u")
        extra = {WORK_EMAIL: f"{name}@example.com", DEPARTMENT: "Research"}
        created = await target.create("User", fresh("anchor-"), user(name, **extra))
        assert created.anchor is not None
        found = await target.get_by_anchor("User", created.anchor)
        assert found is not None
        assert_has(found, extra)

    async def test_find_by_attribute(self, target: Target) -> None:
        """An object is found by an attribute value (first sync into a populated target); no match is None."""
        created = await self.new_user(target)
        name = created.attributes["userName"]
        found = await target.find_by_attribute("User", "userName", name)
        assert found is not None
        assert found.id == created.id
        assert await target.find_by_attribute("User", "userName", fresh("absent")) is None
        group = await self.new_group(target)
        found_group = await target.find_by_attribute("Group", "displayName", group.attributes["displayName"])
        assert found_group is not None
        assert found_group.id == group.id

    async def test_objects_lists_every_object_of_a_type(self, target: Target) -> None:
        """``objects`` yields every created user (and no group among the users)."""
        users = {(await self.new_user(target)).id for _ in range(3)}
        group = await self.new_group(target)
        listed = {obj.id: obj async for obj in target.objects("User")}
        assert users <= listed.keys()
        assert group.id not in listed
        assert all(obj.resource_type == "User" for obj in listed.values())
        assert group.id in {obj.id async for obj in target.objects("Group")}

    # ------------------------------------------------------------------ update

    async def test_update_sets_attributes(self, target: Target) -> None:
        """Update changes given attributes, adds new ones and leaves the others as they were."""
        created = await self.new_user(target)
        changes = {"displayName": "Changed Name", "title": "Engineer", "name.familyName": "Lovelace"}
        updated = await target.update(created, changes)
        assert updated.id == created.id
        assert_has(updated, changes)
        assert created.anchor is not None
        found = await target.get_by_anchor("User", created.anchor)
        assert found is not None
        assert_has(found, {**changes, "userName": created.attributes["userName"], "name.givenName": "Ada"})

    async def test_update_clears_attributes_given_none(self, target: Target) -> None:
        """A value of None removes an attribute; clearing an absent one is not an error."""
        created = await self.new_user(target, title="Engineer")
        updated = await target.update(created, {"title": None, "name.givenName": None})
        assert "title" not in updated.attributes
        assert "name.givenName" not in updated.attributes
        assert created.anchor is not None
        found = await target.get_by_anchor("User", created.anchor)
        assert found is not None
        assert "title" not in found.attributes
        assert found.attributes["userName"] == created.attributes["userName"]

    async def test_update_multi_valued_path(self, target: Target) -> None:
        """A typed multi-valued path is set where absent, replaced where present, and cleared."""
        created = await self.new_user(target)
        first = await target.update(created, {WORK_EMAIL: "first@example.com"})
        assert_has(first, {WORK_EMAIL: "first@example.com"})
        second = await target.update(first, {WORK_EMAIL: "second@example.com"})
        assert_has(second, {WORK_EMAIL: "second@example.com"})
        cleared = await target.update(second, {WORK_EMAIL: None})
        assert WORK_EMAIL not in cleared.attributes

    async def test_update_claims_anchor(self, target: Target) -> None:
        """Update with ``anchor`` moves the object to the new anchor (claiming a matched object)."""
        created = await self.new_user(target)
        old, new = created.anchor, fresh("claimed-")
        assert old is not None
        claimed = await target.update(created, {}, anchor=new)
        assert claimed.anchor == new
        found = await target.get_by_anchor("User", new)
        assert found is not None
        assert found.id == created.id
        assert await target.get_by_anchor("User", old) is None

    async def test_update_group_display_name(self, target: Target) -> None:
        """A group's attributes are updated like a user's."""
        group = await self.new_group(target)
        name = fresh("renamed-")
        updated = await target.update(group, {"displayName": name})
        assert_has(updated, {"displayName": name})

    # ------------------------------------------------------------------ membership

    async def test_change_members_adds_and_removes(self, target: Target) -> None:
        """Members are added and removed by id, leaving the others in place."""
        users = [await self.new_user(target) for _ in range(3)]
        group = await self.new_group(target)
        await target.change_members(group, add=[u.id for u in users], remove=[])
        assert group.anchor is not None
        found = await target.get_by_anchor("Group", group.anchor)
        assert found is not None
        assert found.members == {u.id for u in users}
        await target.change_members(found, add=[], remove=[users[1].id])
        found = await target.get_by_anchor("Group", group.anchor)
        assert found is not None
        assert found.members == {users[0].id, users[2].id}

    async def test_change_members_is_idempotent(self, target: Target) -> None:
        """Adding a present member or removing an absent one is not an error and changes nothing."""
        a, b = await self.new_user(target), await self.new_user(target)
        group = await self.new_group(target)
        await target.change_members(group, add=[a.id], remove=[])
        await target.change_members(group, add=[a.id], remove=[b.id])
        assert group.anchor is not None
        found = await target.get_by_anchor("Group", group.anchor)
        assert found is not None
        assert found.members == {a.id}

    async def test_change_members_in_many_batches(self, target: Target) -> None:
        """More members than one batch holds are all added, then all removed."""
        users = [await self.new_user(target) for _ in range(130)]
        group = await self.new_group(target)
        await target.change_members(group, add=[u.id for u in users], remove=[])
        assert group.anchor is not None
        found = await target.get_by_anchor("Group", group.anchor)
        assert found is not None
        assert found.members == {u.id for u in users}
        await target.change_members(found, add=[], remove=[u.id for u in users[:120]])
        found = await target.get_by_anchor("Group", group.anchor)
        assert found is not None
        assert found.members == {u.id for u in users[120:]}

    async def test_members_removed_one_at_a_time_until_empty(self, target: Target) -> None:
        """Successive removals leave exactly the others each time; an emptied group can be filled again."""
        users = [await self.new_user(target) for _ in range(3)]
        group = await self.new_group(target)
        assert group.anchor is not None
        await target.change_members(group, add=[u.id for u in users], remove=[])
        for gone in range(1, 4):
            await target.change_members(group, add=[], remove=[users[gone - 1].id])
            found = await target.get_by_anchor("Group", group.anchor)
            assert found is not None
            assert found.members == {u.id for u in users[gone:]}
        await target.change_members(group, add=[users[0].id], remove=[])
        found = await target.get_by_anchor("Group", group.anchor)
        assert found is not None
        assert found.members == {users[0].id}

    # ------------------------------------------------------------------ disable and delete

    async def test_disable_marks_inactive(self, target: Target) -> None:
        """A disabled user stays in the target, inactive."""
        created = await self.new_user(target)
        await target.disable(created)
        assert created.anchor is not None
        found = await target.get_by_anchor("User", created.anchor)
        assert found is not None
        assert found.active is False
        assert found.attributes.get("active") is False

    async def test_delete_removes(self, target: Target) -> None:
        """A deleted object is gone; deleting it again is ``TargetNotFoundError``."""
        created = await self.new_user(target)
        group = await self.new_group(target)
        await target.delete(created)
        await target.delete(group)
        assert created.anchor is not None
        assert group.anchor is not None
        assert await target.get_by_anchor("User", created.anchor) is None
        assert await target.get_by_anchor("Group", group.anchor) is None
        with pytest.raises(TargetNotFoundError):
            await target.delete(created)

    async def test_update_of_deleted_object_is_not_found(self, target: Target) -> None:
        """Updating, disabling or changing the members of a deleted object is ``TargetNotFoundError``."""
        created = await self.new_user(target)
        group = await self.new_group(target)
        await target.delete(created)
        await target.delete(group)
        with pytest.raises(TargetNotFoundError):
            await target.update(created, {"title": "Ghost"})
        with pytest.raises(TargetNotFoundError):
            await target.disable(created)
        with pytest.raises(TargetNotFoundError):
            await target.change_members(group, add=[], remove=[created.id])

    # ------------------------------------------------------------------ errors

    async def test_taken_user_name_is_a_conflict(self, target: Target) -> None:
        """A second user with a taken ``userName`` is ``TargetConflictError`` (not a generic failure)."""
        created = await self.new_user(target)
        with pytest.raises(TargetConflictError):
            await target.create("User", fresh("anchor-"), user(created.attributes["userName"]))

    async def test_provisioned_anchor_is_a_conflict(self, target: Target) -> None:
        """Where anchors are unique, creating a second object with the same anchor is a conflict."""
        if not self.unique_anchor:
            pytest.skip("this target keeps anchors but does not make them unique")
        created = await self.new_user(target)
        other = await self.new_user(target)
        assert created.anchor is not None
        with pytest.raises(TargetConflictError):
            await target.create("User", created.anchor, user(fresh("u")))
        with pytest.raises(TargetConflictError):
            await target.update(other, {}, anchor=created.anchor)

    async def test_invalid_user_is_rejected(self, target: Target) -> None:
        """A user the target cannot accept (no ``userName``) is ``TargetRejectedError``, not retried."""
        if not self.rejects_user_without_name:
            pytest.skip("this target accepts what the mapping gives it")
        with pytest.raises(TargetRejectedError):
            await target.create("User", fresh("anchor-"), {"displayName": "Nameless"})
