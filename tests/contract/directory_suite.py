"""The ``Directory`` behaviour suite, written once and run against every directory plugin.

Subclass ``DirectoryBehaviour`` in a ``test_*.py`` module and provide two fixtures:

- ``directory``: an opened ``Directory`` (async fixture; close it on teardown);
- ``shapes``: a ``Shapes`` for that server's schema (``OpenLdapShapes`` for inetOrgPerson/groupOfNames,
  ``ActiveDirectoryShapes`` for user/group with sAMAccountName, or your own).

Every test works inside its own fresh organizational unit under ``directory.base_dn`` (the
``container`` fixture) and deletes it afterwards, so the suite can run against a shared real server.
Tests compare DNs through ``plugins.dn.normalize`` since servers may re-spell what they return.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import pytest
import pytest_asyncio

from plugins import dn as dnlib
from plugins.directory import (
    AlreadyExistsError,
    AttrValue,
    Change,
    ChangeKind,
    ConstraintError,
    Directory,
    Entry,
    InvalidDNError,
    InvalidFilterError,
    Modification,
    ModOp,
    NoSuchObjectError,
    NotAllowedError,
    Scope,
)
from plugins.ldapfilter import escape_value
from protocol.scimeval import fold_case

Shape = tuple[str, dict[str, list[AttrValue]]]

SPECIAL_RDN_VALUES = [
    "comma, inside",
    "plus+sign",
    'double"quote',
    "back\\slash",
    "<angle>",
    "semi;colon",
    "equals=sign",
    "#leading hash",
    " leading space",
    "trailing space ",
    "Zoë Ünïcødé 名前",
    'all , + " \\ < > ; = # of them',
]


class Shapes(Protocol):
    """How to build entries for one server's schema."""

    #: Attribute naming a person (``uid`` for inetOrgPerson, ``cn`` for an AD user).
    person_rdn_attribute: str
    #: The attribute identifying an entry for life (``entryUUID`` / ``objectGUID``).
    anchor_attribute: str
    #: A multi-valued text attribute people may have (``telephoneNumber`` / ``otherTelephone``).
    multi_valued_attribute: str
    #: A single-valued free-text attribute people may have (``title`` on both).
    text_attribute: str

    def organizational_unit(self, name: str, parent: str) -> Shape: ...

    def person(self, name: str, parent: str, **extra: Sequence[AttrValue]) -> Shape: ...

    def group(self, name: str, parent: str, members: Sequence[str]) -> Shape: ...


def _short_id(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:14]


class OpenLdapShapes:
    """inetOrgPerson people named by uid, groupOfNames groups, organizationalUnit containers."""

    person_rdn_attribute = "uid"
    anchor_attribute = "entryUUID"
    multi_valued_attribute = "telephoneNumber"
    text_attribute = "title"

    def organizational_unit(self, name: str, parent: str) -> Shape:
        return dnlib.join(f"ou={dnlib.escape_value(name)}", parent), {
            "objectClass": ["top", "organizationalUnit"],
            "ou": [name],
        }

    def person(self, name: str, parent: str, **extra: Sequence[AttrValue]) -> Shape:
        attributes: dict[str, list[AttrValue]] = {
            "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson"],
            "uid": [name],
            "cn": [name],
            "sn": ["Tester"],
        }
        attributes.update((name, list(values)) for name, values in extra.items())
        return dnlib.join(f"uid={dnlib.escape_value(name)}", parent), attributes

    def group(self, name: str, parent: str, members: Sequence[str]) -> Shape:
        return dnlib.join(f"cn={dnlib.escape_value(name)}", parent), {
            "objectClass": ["top", "groupOfNames"],
            "cn": [name],
            "member": list(members),
        }


class ActiveDirectoryShapes:
    """AD user/group entries named by CN, with a unique short sAMAccountName; OU containers."""

    person_rdn_attribute = "cn"
    anchor_attribute = "objectGUID"
    multi_valued_attribute = "otherTelephone"
    text_attribute = "title"

    def organizational_unit(self, name: str, parent: str) -> Shape:
        return dnlib.join(f"OU={dnlib.escape_value(name)}", parent), {
            "objectClass": ["top", "organizationalUnit"],
            "ou": [name],
        }

    def person(self, name: str, parent: str, **extra: Sequence[AttrValue]) -> Shape:
        account = "u" + _short_id(name, parent)
        attributes: dict[str, list[AttrValue]] = {
            "objectClass": ["top", "person", "organizationalPerson", "user"],
            "cn": [name],
            "sn": ["Tester"],
            "sAMAccountName": [account],
            "userAccountControl": ["514"],  # a disabled account needs no password
        }
        attributes.update((name, list(values)) for name, values in extra.items())
        return dnlib.join(f"CN={dnlib.escape_value(name)}", parent), attributes

    def group(self, name: str, parent: str, members: Sequence[str]) -> Shape:
        return dnlib.join(f"CN={dnlib.escape_value(name)}", parent), {
            "objectClass": ["top", "group"],
            "cn": [name],
            "sAMAccountName": ["g" + _short_id(name, parent)],
            "groupType": ["-2147483646"],
            "member": list(members),
        }


async def collect(
    directory: Directory,
    base: str,
    ldap_filter: str = "(objectClass=*)",
    *,
    scope: Scope = Scope.SUBTREE,
    attributes: Sequence[str] | None = None,
    page_size: int = 500,
) -> list[Entry]:
    """Every entry a search returns, all pages joined."""
    entries: list[Entry] = []
    async for page in directory.search(base, ldap_filter, scope=scope, attributes=attributes, page_size=page_size):
        entries.extend(page)
    return entries


def normalized(dns: Sequence[str] | Sequence[Entry]) -> list[str]:
    """Sorted normalised DNs, for order-independent comparisons."""
    return sorted(dnlib.normalize(item.dn if isinstance(item, Entry) else item) for item in dns)


def texts(entry: Entry | None, attribute: str) -> list[str]:
    """An attribute's values as text (binary ones decoded)."""
    assert entry is not None
    return [value.decode("utf-8", "replace") if isinstance(value, bytes) else value for value in entry.get(attribute)]


class DirectoryBehaviour:
    """What every ``Directory`` implementation must do; subclass and provide ``directory`` and ``shapes``."""

    @pytest.fixture
    def directory(self) -> Directory:
        pytest.fail("a DirectoryBehaviour subclass must provide the 'directory' fixture (an opened Directory)")

    @pytest.fixture
    def shapes(self) -> Shapes:
        pytest.fail("a DirectoryBehaviour subclass must provide the 'shapes' fixture")

    @pytest_asyncio.fixture
    async def container(self, directory: Directory, shapes: Shapes) -> AsyncIterator[str]:
        """A fresh organizational unit for one test, deleted with everything below it afterwards."""
        dn, attributes = shapes.organizational_unit(f"contract-{uuid.uuid4().hex[:12]}", directory.base_dn)
        await directory.add(dn, attributes)
        try:
            yield dn
        finally:
            leftovers = await collect(directory, dn, attributes=["1.1"])
            for entry in sorted(leftovers, key=lambda item: len(dnlib.parse(item.dn)), reverse=True):
                with contextlib.suppress(NoSuchObjectError):  # a test may have deleted it already
                    await directory.delete(entry.dn)

    async def add_person(
        self, directory: Directory, shapes: Shapes, name: str, parent: str, **extra: Sequence[AttrValue]
    ) -> str:
        dn, attributes = shapes.person(name, parent, **extra)
        await directory.add(dn, attributes)
        return dn

    async def add_ou(self, directory: Directory, shapes: Shapes, name: str, parent: str) -> str:
        dn, attributes = shapes.organizational_unit(name, parent)
        await directory.add(dn, attributes)
        return dn

    # ------------------------------------------------------------------------------------- add / get

    async def test_add_then_get_returns_entry_with_anchor(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """An added entry comes back from get with its values and the server-assigned anchor."""
        dn = await self.add_person(directory, shapes, "alice", container, **{shapes.text_attribute: ["Engineer"]})
        entry = await directory.get(dn)
        assert entry is not None
        assert dnlib.normalize(entry.dn) == dnlib.normalize(dn)
        assert texts(entry, shapes.text_attribute) == ["Engineer"]
        assert texts(entry, shapes.person_rdn_attribute) == ["alice"]
        assert entry.first(shapes.anchor_attribute)

    async def test_get_is_case_insensitive_and_missing_is_none(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """get finds an entry under any case spelling of its DN and returns None for a missing one."""
        dn = await self.add_person(directory, shapes, "bob", container)
        assert await directory.get(dn.upper()) is not None
        assert await directory.get(dnlib.join(f"{shapes.person_rdn_attribute}=nobody", container)) is None

    async def test_group_keeps_member_dns(self, directory: Directory, shapes: Shapes, container: str) -> None:
        """A group stores its member DNs and a filter on one member finds it."""
        members = [await self.add_person(directory, shapes, name, container) for name in ("m1", "m2")]
        group_dn, attributes = shapes.group("team", container, members)
        await directory.add(group_dn, attributes)
        entry = await directory.get(group_dn)
        assert entry is not None
        assert normalized(texts(entry, "member")) == normalized(members)
        found = await collect(directory, container, f"(member={escape_value(members[0])})")
        assert normalized(found) == normalized([group_dn])

    async def test_add_existing_dn_raises_already_exists(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """Adding a DN that exists (in any case spelling) raises AlreadyExistsError."""
        dn, attributes = shapes.person("carol", container)
        await directory.add(dn, attributes)
        with pytest.raises(AlreadyExistsError):
            await directory.add(dn, attributes)
        with pytest.raises(AlreadyExistsError):
            await directory.add(dn.upper(), shapes.person("CAROL", container)[1])

    async def test_add_under_missing_parent_raises_no_such_object(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """An entry cannot be added below a parent that does not exist."""
        missing = dnlib.join("ou=missing", container)
        dn, attributes = shapes.person("dave", missing)
        with pytest.raises(NoSuchObjectError):
            await directory.add(dn, attributes)

    async def test_add_without_object_class_raises_constraint(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """objectClass is required on add."""
        dn, attributes = shapes.person("erin", container)
        del attributes["objectClass"]
        with pytest.raises(ConstraintError):
            await directory.add(dn, attributes)
        assert await directory.get(dn) is None

    # ------------------------------------------------------------------------------------- search

    async def test_search_scopes(self, directory: Directory, shapes: Shapes, container: str) -> None:
        """base returns the base only, onelevel its children, subtree the base and every descendant."""
        sub = await self.add_ou(directory, shapes, "sub", container)
        deep = await self.add_person(directory, shapes, "deep", sub)
        near = await self.add_person(directory, shapes, "near", container)
        assert normalized(await collect(directory, container, scope=Scope.BASE)) == normalized([container])
        assert normalized(await collect(directory, container, scope=Scope.ONELEVEL)) == normalized([sub, near])
        assert normalized(await collect(directory, container, scope=Scope.SUBTREE)) == normalized(
            [container, sub, deep, near]
        )

    async def test_paging_never_exceeds_page_size_and_returns_each_entry_once(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """A paged search yields pages of at most page_size that together hold every match exactly once."""
        people = [await self.add_person(directory, shapes, f"p{index}", container) for index in range(7)]
        person_filter = f"({shapes.person_rdn_attribute}=p*)"
        pages = [page async for page in directory.search(container, person_filter, scope=Scope.ONELEVEL, page_size=3)]
        assert all(0 < len(page) <= 3 for page in pages)
        assert len(pages) >= 3
        seen = [entry.dn for page in pages for entry in page]
        assert len(seen) == len(set(normalized(seen)))
        assert normalized(seen) == normalized(people)

    async def test_search_without_matches_returns_no_entries(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """A search matching nothing yields no entries (at most one empty page)."""
        pages = [page async for page in directory.search(container, "(cn=does-not-exist)")]
        assert len(pages) <= 1
        assert all(page == [] for page in pages)

    async def test_attribute_selection(self, directory: Directory, shapes: Shapes, container: str) -> None:
        """Only requested attributes come back (names case-insensitive); None includes the anchor."""
        dn = await self.add_person(directory, shapes, "frank", container, **{shapes.text_attribute: ["Boss"]})
        chosen = await directory.get(dn, [shapes.text_attribute.upper()])
        assert chosen is not None
        assert [name.lower() for name in chosen.attributes] == [shapes.text_attribute.lower()]
        assert texts(chosen, shapes.text_attribute) == ["Boss"]
        everything = await directory.get(dn)
        assert everything is not None
        assert shapes.anchor_attribute in everything.attributes
        assert shapes.text_attribute in everything.attributes
        anchor_only = await directory.get(dn, [shapes.anchor_attribute])
        assert anchor_only is not None
        assert anchor_only.first(shapes.anchor_attribute) == everything.first(shapes.anchor_attribute)
        [found] = await collect(directory, container, f"({shapes.person_rdn_attribute}=frank)", attributes=["1.1"])
        assert len(found.attributes) == 0

    async def test_search_results_are_copies(self, directory: Directory, shapes: Shapes, container: str) -> None:
        """Mutating a returned entry does not change what the directory holds."""
        dn = await self.add_person(directory, shapes, "grace", container, **{shapes.text_attribute: ["Admiral"]})
        [entry] = await collect(directory, container, f"({shapes.person_rdn_attribute}=grace)")
        entry.attributes[shapes.text_attribute].append("Mutated")
        entry.attributes.set(shapes.text_attribute, ["Changed"])
        assert texts(await directory.get(dn), shapes.text_attribute) == ["Admiral"]

    async def test_hostile_filter_values_match_exactly_the_intended_entries(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """Values holding * ( ) \\ NUL, escaped with escape_value, match literally and nothing else."""
        attribute = shapes.text_attribute
        values = ["x*y", "x(y)", "x\\y", "*", "xAy", "x", "y)", "(y"]
        by_value = {}
        for index, value in enumerate(values):
            extra: dict[str, list[AttrValue]] = {attribute: [value]}
            by_value[value] = await self.add_person(directory, shapes, f"h{index}", container, **extra)
        for value in values:
            found = await collect(directory, container, f"({attribute}={escape_value(value)})")
            assert normalized(found) == normalized([by_value[value]]), value
        around = await collect(directory, container, f"({attribute}=*{escape_value('(y')}*)")
        assert normalized(around) == normalized([by_value["x(y)"], by_value["(y"]])
        injected = escape_value("*)(objectClass=*")
        assert await collect(directory, container, f"({attribute}={injected})") == []
        assert await collect(directory, container, f"({attribute}={escape_value('x' + chr(0) + 'y')})") == []

    async def test_spaces_at_the_outer_ends_of_substring_pieces_are_insignificant(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """A value has no spaces at its ends to find (RFC 4518 §2.6.1), so ``*b `` finds the values ending in
        b and `` a*`` those starting with a. (At a piece's inner end servers differ: slapd and the memory
        directory look for the space, ``*a *`` finds "a b" but not "ab"; Samba ignores it there too.)"""
        attribute = shapes.text_attribute
        values = ["ab", "a b", "x a b y", "b"]
        by_value = {}
        for index, value in enumerate(values):
            extra: dict[str, list[AttrValue]] = {attribute: [value]}
            by_value[value] = await self.add_person(directory, shapes, f"s{index}", container, **extra)
        expected = {
            "*b ": ["ab", "a b", "b"],
            "*b  ": ["ab", "a b", "b"],
            " a*": ["ab", "a b"],
            "  a*b ": ["ab", "a b"],
            " x*y ": ["x a b y"],
        }
        for pattern, matching in expected.items():
            escaped = "*".join(escape_value(piece) for piece in pattern.split("*"))
            found = await collect(directory, container, f"({attribute}={escaped})")
            assert normalized(found) == normalized([by_value[value] for value in matching]), repr(pattern)

    async def test_every_letter_pair_the_scim_layer_folds_is_folded_by_the_directory(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """For each non-ASCII letter ``protocol.scimeval.fold_case`` lower-cases, a search for it finds the
        value holding its lower-case letter: a SCIM list evaluates what the directory returned again with
        ``fold_case``, and would miss what it equates where the directory does not."""
        folded = {letter: fold_case(letter) for letter in map(chr, range(0x80, 0x10000))}
        pairs = sorted((upper, lower) for upper, lower in folded.items() if lower != upper)
        assert len(pairs) > 500  # Latin, Greek, Cyrillic, Armenian, full-width…
        attribute = shapes.text_attribute
        holders = {}
        for start in range(0, len(pairs), 40):  # AD's title holds 128 characters
            lowers = "".join(lower for _, lower in pairs[start : start + 40])
            extra: dict[str, list[AttrValue]] = {attribute: [lowers]}
            dn = dnlib.normalize(await self.add_person(directory, shapes, f"f{start}", container, **extra))
            holders.update((lower, dn) for lower in lowers)
        missed = []
        for upper, lower in pairs:
            found = await collect(directory, container, f"({attribute}=*{escape_value(upper)}*)", attributes=["1.1"])
            if holders[lower] not in normalized(found):
                missed.append(f"{upper} U+{ord(upper):04X}")
        assert missed == []

    async def test_bad_filter_raises_invalid_filter(self, directory: Directory, container: str) -> None:
        """A malformed filter raises InvalidFilterError when the search runs."""
        for bad in ("(cn=a", "(cn=a)(", "(&(cn=a)", "(cn=\\zz)"):
            with pytest.raises(InvalidFilterError):
                await collect(directory, container, bad)

    async def test_search_missing_base_raises_no_such_object(self, directory: Directory, container: str) -> None:
        """Searching below a base that does not exist raises NoSuchObjectError."""
        with pytest.raises(NoSuchObjectError):
            await collect(directory, dnlib.join("ou=absent", container))

    async def test_bad_dn_raises_invalid_dn(self, directory: Directory, shapes: Shapes, container: str) -> None:
        """Malformed DNs raise InvalidDNError from get, add, search, modify and delete."""
        bad = f"{shapes.person_rdn_attribute}=a,,{container}"
        with pytest.raises(InvalidDNError):
            await directory.get(bad)
        with pytest.raises(InvalidDNError):
            await directory.add(bad, shapes.person("a", container)[1])
        with pytest.raises(InvalidDNError):
            await collect(directory, "not a dn")
        with pytest.raises(InvalidDNError):
            await directory.modify(bad, [Modification(ModOp.REPLACE, shapes.text_attribute, ("x",))])
        with pytest.raises(InvalidDNError):
            await directory.delete(bad)

    # ------------------------------------------------------------------------------------- modify

    async def test_modify_add_delete_replace_values(self, directory: Directory, shapes: Shapes, container: str) -> None:
        """ADD appends values, DELETE removes given values or the attribute, REPLACE sets or clears it."""
        dn = await self.add_person(directory, shapes, "heidi", container)
        multi, text = shapes.multi_valued_attribute, shapes.text_attribute
        await directory.modify(dn, [Modification(ModOp.ADD, multi, ("+1 555 0001", "+1 555 0002"))])
        assert sorted(texts(await directory.get(dn), multi)) == ["+1 555 0001", "+1 555 0002"]
        await directory.modify(dn, [Modification(ModOp.DELETE, multi, ("+1 555 0001",))])
        assert texts(await directory.get(dn), multi) == ["+1 555 0002"]
        await directory.modify(dn, [Modification(ModOp.REPLACE, text, ("Chief",))])
        assert texts(await directory.get(dn), text) == ["Chief"]
        await directory.modify(dn, [Modification(ModOp.DELETE, multi), Modification(ModOp.REPLACE, text)])
        entry = await directory.get(dn)
        assert entry is not None
        assert multi not in entry.attributes
        assert text not in entry.attributes

    async def test_modify_value_errors_raise_constraint(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """Adding an existing value (any case) or deleting a missing one raises ConstraintError."""
        multi = shapes.multi_valued_attribute
        dn = await self.add_person(directory, shapes, "ivan", container, **{multi: ["+1 555 0003"]})
        with pytest.raises(ConstraintError):
            await directory.modify(dn, [Modification(ModOp.ADD, multi, ("+1 555 0003",))])
        with pytest.raises(ConstraintError):
            await directory.modify(dn, [Modification(ModOp.DELETE, multi, ("+1 555 9999",))])
        with pytest.raises(ConstraintError):
            await directory.modify(dn, [Modification(ModOp.DELETE, shapes.text_attribute)])

    async def test_modify_is_atomic(self, directory: Directory, shapes: Shapes, container: str) -> None:
        """When one change of a modify fails, none of its changes are applied."""
        multi, text = shapes.multi_valued_attribute, shapes.text_attribute
        extra: dict[str, list[AttrValue]] = {multi: ["+1 555 0004"], text: ["Before"]}
        dn = await self.add_person(directory, shapes, "judy", container, **extra)
        with pytest.raises(ConstraintError):
            await directory.modify(
                dn,
                [
                    Modification(ModOp.REPLACE, text, ("After",)),
                    Modification(ModOp.ADD, multi, ("+1 555 0005",)),
                    Modification(ModOp.ADD, multi, ("+1 555 0004",)),
                ],
            )
        entry = await directory.get(dn)
        assert texts(entry, text) == ["Before"]
        assert texts(entry, multi) == ["+1 555 0004"]

    async def test_modify_missing_entry_raises_no_such_object(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """Modifying an entry that does not exist raises NoSuchObjectError."""
        missing = dnlib.join(f"{shapes.person_rdn_attribute}=ghost", container)
        with pytest.raises(NoSuchObjectError):
            await directory.modify(missing, [Modification(ModOp.REPLACE, shapes.text_attribute, ("x",))])

    # ------------------------------------------------------------------------------------- delete

    async def test_delete_leaf_and_refuse_non_leaf(self, directory: Directory, shapes: Shapes, container: str) -> None:
        """A leaf can be deleted; an entry with children raises NotAllowedError and stays."""
        sub = await self.add_ou(directory, shapes, "parent", container)
        leaf = await self.add_person(directory, shapes, "kim", sub)
        with pytest.raises(NotAllowedError):
            await directory.delete(sub)
        assert await directory.get(sub) is not None
        await directory.delete(leaf)
        assert await directory.get(leaf) is None
        await directory.delete(sub)
        assert await directory.get(sub) is None

    async def test_delete_missing_raises_no_such_object(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """Deleting an entry that does not exist raises NoSuchObjectError."""
        with pytest.raises(NoSuchObjectError):
            await directory.delete(dnlib.join(f"{shapes.person_rdn_attribute}=ghost", container))

    # ------------------------------------------------------------------------------------- rename

    async def test_rename_replaces_the_rdn_value(self, directory: Directory, shapes: Shapes, container: str) -> None:
        """Rename moves the entry to its new DN, replaces the old RDN value and keeps the anchor."""
        dn = await self.add_person(directory, shapes, "leo", container)
        before = await directory.get(dn)
        assert before is not None
        new_dn = await directory.rename(dn, f"{shapes.person_rdn_attribute}=leon")
        assert dnlib.normalize(new_dn) == dnlib.normalize(dnlib.join(f"{shapes.person_rdn_attribute}=leon", container))
        assert await directory.get(dn) is None
        after = await directory.get(new_dn)
        assert texts(after, shapes.person_rdn_attribute) == ["leon"]
        assert after is not None
        assert after.first(shapes.anchor_attribute) == before.first(shapes.anchor_attribute)

    async def test_rename_moves_children_and_to_new_superior(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """Renaming a container moves its children; new_superior moves an entry under another parent."""
        old_ou = await self.add_ou(directory, shapes, "before", container)
        child = await self.add_person(directory, shapes, "mia", old_ou)
        new_ou = await directory.rename(old_ou, shapes.organizational_unit("after", container)[0].split(",", 1)[0])
        moved = dnlib.join(dnlib.rdn(child), new_ou)
        assert await directory.get(child) is None
        assert await directory.get(moved) is not None
        other = await self.add_ou(directory, shapes, "other", container)
        final = await directory.rename(moved, dnlib.rdn(moved), new_superior=other)
        assert dnlib.normalize(final) == dnlib.normalize(dnlib.join(dnlib.rdn(moved), other))
        assert await directory.get(final) is not None
        assert await directory.get(moved) is None

    async def test_rename_onto_existing_dn_raises_already_exists(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """Renaming onto a DN that is taken raises AlreadyExistsError and changes nothing."""
        first = await self.add_person(directory, shapes, "ned", container)
        await self.add_person(directory, shapes, "olga", container)
        with pytest.raises(AlreadyExistsError):
            await directory.rename(first, f"{shapes.person_rdn_attribute}=olga")
        assert await directory.get(first) is not None

    @pytest.mark.parametrize("value", SPECIAL_RDN_VALUES)
    async def test_special_characters_in_rdn_values(
        self, directory: Directory, shapes: Shapes, container: str, value: str
    ) -> None:
        """RDN values with , + " \\ < > ; = #, edge spaces or non-ASCII survive add, get, search and rename."""
        rdn_attribute = shapes.person_rdn_attribute
        dn = await self.add_person(directory, shapes, value, container)
        entry = await directory.get(dn)
        assert texts(entry, rdn_attribute) == [value]
        [found] = await collect(directory, container, f"({rdn_attribute}={escape_value(value)})")
        assert dnlib.normalize(found.dn) == dnlib.normalize(dn)
        assert dnlib.parse(found.dn)[0].get(rdn_attribute) == value
        renamed_value = value + " renamed"
        new_dn = await directory.rename(dn, f"{rdn_attribute}={dnlib.escape_value(renamed_value)}")
        assert dnlib.parse(new_dn)[0].get(rdn_attribute) == renamed_value
        assert texts(await directory.get(new_dn), rdn_attribute) == [renamed_value]
        assert await directory.get(dn) is None
        back = await directory.rename(new_dn, f"{rdn_attribute}={dnlib.escape_value(value)}")
        assert dnlib.normalize(back) == dnlib.normalize(dn)

    # ------------------------------------------------------------------------------------- changes

    async def test_changes_from_none_is_empty_with_a_watermark(self, directory: Directory) -> None:
        """changes(None) reports nothing and hands out a watermark to start from."""
        first = await directory.changes(None)
        assert first.changes == []
        assert first.watermark
        assert not first.more

    async def test_changes_report_add_modify_rename_delete_in_order(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        """Each write appears in changes() after the previous watermark; a deletion carries the anchor."""
        watermark = (await directory.changes(None)).watermark
        dn = await self.add_person(directory, shapes, "pat", container)
        entry = await directory.get(dn)
        assert entry is not None
        anchor = entry.first(shapes.anchor_attribute)

        async def mine() -> list[Change]:
            """The changes to our entry since the last call (others' changes on a shared server skipped)."""
            nonlocal watermark
            found: list[Change] = []
            while True:
                batch = await directory.changes(watermark, limit=100)
                watermark = batch.watermark
                found.extend(
                    change
                    for change in batch.changes
                    if change.entry is not None and change.entry.first(shapes.anchor_attribute) == anchor
                )
                if not batch.more:
                    return found

        [added] = await mine()
        assert added.kind is ChangeKind.ADD
        await directory.modify(dn, [Modification(ModOp.REPLACE, shapes.text_attribute, ("Changed",))])
        [modified] = await mine()
        assert modified.kind is ChangeKind.MODIFY
        assert texts(modified.entry, shapes.text_attribute) == ["Changed"]
        new_dn = await directory.rename(dn, f"{shapes.person_rdn_attribute}=patricia")
        [renamed] = await mine()
        assert renamed.kind is ChangeKind.RENAME
        assert renamed.old_dn is not None
        assert dnlib.normalize(renamed.old_dn) == dnlib.normalize(dn)
        assert dnlib.normalize(renamed.dn) == dnlib.normalize(new_dn)
        await directory.delete(new_dn)
        [deleted] = await mine()
        assert deleted.kind is ChangeKind.DELETE
