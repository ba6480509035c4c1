"""The in-memory DIT: entries in a tree, an equality index, and LDAP add/modify/delete/rename rules.

Synchronous and single-threaded (the asyncio directory calls it between awaits, so every operation is
atomic). No settings of its own: the flavor's ``Operational`` policy stamps operational attributes.

Guarantees (the same as a real LDAP server):
- DNs compare case-insensitively (``plugins.dn.normalize``); the parent must exist to add; only leaves
  can be deleted; rename is modrdn with deleteoldrdn=1 and moves the whole subtree;
- attribute values are multi-valued and compared as ``plugins.ldapfilter`` compares them; an existing
  value added again or a missing value deleted is ``ConstraintError`` (LDAP 20 / 16); an empty value
  is refused except the empty DN in a DN-valued attribute (``member: `` is valid LDAP);
- modify builds a new attribute set and swaps it in only when every change succeeded (all or none);
  stored attribute sets are never mutated afterwards, so a search snapshot is consistent and cheap;
- an equality index (attribute, normalised value) → entries serves equality/approx items, AND (the most
  selective indexed item) and OR (when every branch is indexed); anything else scans the scope. The
  index is exact: it holds the values of attributes without options (``cn``, not ``cn;lang-en``, which
  a filter on ``cn`` does not match), so an entry is in a key's bucket exactly when the equality item
  matches it, and a search decides its other equality conjuncts by membership (``plugins.memory.query``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter

from plugins import dn as dnlib
from plugins import ldapfilter
from plugins.directory import (
    AlreadyExistsError,
    Attributes,
    AttrValue,
    ConstraintError,
    Modification,
    ModOp,
    NoSuchObjectError,
    NotAllowedError,
    Scope,
)
from plugins.ldapfilter import Normalized, normalize_value
from plugins.memory.operational import Operational
from plugins.memory.query import IndexKey, Query, index_name, key_of

#: DN-syntax attributes, where the empty value is a valid DN (the root DSE's name), as on a real server.
_DN_SYNTAX = frozenset({"member", "uniquemember", "manager", "owner", "seealso", "secretary", "roleoccupant"})
_NOTHING: frozenset[Record] = frozenset()
#: A module global: Python 3.11 reads an enum member from its class several times slower, once per search.
_SUBTREE = Scope.SUBTREE


@dataclass(slots=True, eq=False)
class Record:
    """One stored entry. ``attributes`` is replaced, never mutated, once stored."""

    id: int
    dn: str
    key: str
    parent: Record | None
    attributes: Attributes
    children: dict[int, Record] = field(default_factory=dict)


@lru_cache(maxsize=4096)
def _valid_name(name: str) -> bool:
    base, *options = name.split(";")
    if not base or not name.isascii():
        return False
    if base[0].isalpha():
        valid = all(char.isalnum() or char == "-" for char in base)
    else:
        valid = all(part.isdigit() for part in base.split("."))
    return valid and all(option and all(char.isalnum() or char == "-" for char in option) for option in options)


def _values(name: str, values: Sequence[AttrValue] | AttrValue) -> list[AttrValue]:
    """Validated values of one attribute (a lone str/bytes is one value); duplicates refused."""
    if not _valid_name(name):
        raise ConstraintError(f"{name!r} is not a valid attribute description")
    listed: list[AttrValue] = [values] if isinstance(values, str | bytes) else list(values)
    seen: set[Normalized] = set()
    for value in listed:
        if not isinstance(value, str | bytes):
            raise ConstraintError(f"values of {name!r} must be str or bytes, not {type(value).__name__}")
        if not value and name.split(";", 1)[0].lower() not in _DN_SYNTAX:
            raise ConstraintError(f"empty value for {name!r} (invalid attribute syntax)")
        if len(listed) == 1:
            break
        key = normalize_value(name, value)
        if key in seen:
            raise ConstraintError(f"{name!r} has the value {value!r} twice (attributeOrValueExists)")
        seen.add(key)
    return listed


class Store:
    """Entries by normalised DN and by id, with parent/child links and the equality index."""

    def __init__(self, base_dn: str, operational: Operational) -> None:
        self.operational = operational
        self._next_id = 0
        self._by_key: dict[str, Record] = {}
        self._index: dict[IndexKey, set[Record]] = {}
        self.base = self._insert(base_dn, None, _base_attributes(base_dn, operational))

    def __len__(self) -> int:
        return len(self._by_key)

    # ------------------------------------------------------------------------------------- lookups

    def find(self, dn: str) -> Record | None:
        return self._by_key.get(dnlib.normalize(dn))

    def require(self, dn: str) -> Record:
        record = self.find(dn)
        if record is None:
            raise NoSuchObjectError(f"no entry {dn!r}")
        return record

    # ------------------------------------------------------------------------------------- writes

    def add(self, dn: str, attributes: Mapping[str, Sequence[AttrValue]], *, system: bool = False) -> Record:
        """Add an entry; ``system`` lets seed data carry operational attributes (an LDIF export)."""
        key = dnlib.normalize(dn)
        if key in self._by_key:
            raise AlreadyExistsError(f"an entry {dn!r} already exists")
        if not dnlib.is_descendant(dn, self.base.dn):
            raise NoSuchObjectError(f"{dn!r} is outside the naming context {self.base.dn!r}")
        parent = self._by_key.get(dnlib.normalize(dnlib.parent(dn)))
        if parent is None:
            raise NoSuchObjectError(f"cannot add {dn!r}: its parent {dnlib.parent(dn)!r} does not exist")
        attrs = Attributes()
        for name, values in attributes.items():
            if name in attrs:
                raise ConstraintError(f"attribute {name!r} given twice")
            if name.lower() in self.operational.system and not system:
                raise ConstraintError(f"{name!r} is maintained by the directory and cannot be set")
            attrs.set(name, _values(name, values))
        if "objectClass" not in attrs:
            raise ConstraintError(f"cannot add {dn!r} without objectClass (objectClassViolation)")
        self._check_rdn(dn, attrs, adding=True)
        given = {name: attrs[name] for name in attrs if name.lower() in self.operational.system}
        self.operational.on_add(attrs)
        for name, values in given.items():  # an LDIF export keeps its anchors and timestamps
            attrs.set(name, values)
        return self._insert(dn, parent, attrs)

    def modify(self, dn: str, changes: Sequence[Modification]) -> Record:
        record = self.require(dn)
        # The new set shares the lists of the attributes no change touches (every step below replaces an
        # attribute's list, none changes one), so that ``_reindex`` passes over them at once.
        attrs = record.attributes.sharing_values()
        for change in changes:
            self._apply(attrs, change)
        if "objectClass" not in attrs:
            raise ConstraintError(f"{dn!r} would have no objectClass left (objectClassViolation)")
        self._check_rdn(record.dn, attrs, adding=False)
        self.operational.on_modify(attrs)
        self._swap(record, attrs)
        return record

    def delete(self, dn: str) -> Record:
        record = self.require(dn)
        if record is self.base:
            raise NotAllowedError(f"{dn!r} is the naming context and cannot be deleted")
        if record.children:
            raise NotAllowedError(f"{dn!r} has {len(record.children)} children (notAllowedOnNonLeaf)")
        self._unindex(record, record.attributes)
        del self._by_key[record.key]
        if record.parent is not None:
            del record.parent.children[record.id]
        return record

    def rename(self, dn: str, new_rdn: str, new_superior: str | None) -> list[tuple[Record, str]]:
        """modrdn with deleteoldrdn=1; returns (record, old DN) for the entry and every moved descendant."""
        record = self.require(dn)
        rdn = dnlib.parse_rdn(new_rdn)
        if record is self.base:
            raise NotAllowedError(f"{dn!r} is the naming context and cannot be renamed")
        parent = record.parent if new_superior is None else self._by_key.get(dnlib.normalize(new_superior))
        if parent is None:
            raise NoSuchObjectError(f"new superior {new_superior!r} does not exist")
        if parent is record or dnlib.is_descendant(parent.dn, record.dn):
            raise NotAllowedError(f"cannot move {dn!r} below itself")
        new_dn = dnlib.to_string((rdn, *dnlib.parse(parent.dn)))
        new_key = dnlib.normalize(new_dn)
        if new_key == record.key and new_dn == record.dn:
            raise NotAllowedError(f"renaming {dn!r} onto itself")
        if new_key != record.key and new_key in self._by_key:
            raise AlreadyExistsError(f"an entry {new_dn!r} already exists")
        attrs = record.attributes.sharing_values()  # as in ``modify``: lists are replaced, never changed
        for ava in dnlib.parse(record.dn)[0].avas:
            _remove_values(attrs, ava.attribute, [ava.value])
        for ava in rdn.avas:
            if ava.attribute.lower() in self.operational.system:
                raise ConstraintError(f"{ava.attribute!r} cannot name an entry")
            current = attrs.get(ava.attribute, [])
            _values(ava.attribute, [ava.value])
            attrs.set(ava.attribute, [*_without(ava.attribute, current, [ava.value]), ava.value])
        if "objectClass" not in attrs:
            raise ConstraintError(f"{dn!r} would have no objectClass left")
        self.operational.on_modify(attrs)
        self._swap(record, attrs)
        moved: list[tuple[Record, str]] = []
        if record.parent is not parent:
            assert record.parent is not None
            del record.parent.children[record.id]
            parent.children[record.id] = record
            record.parent = parent
        self._rekey(record, new_dn, moved)
        return moved

    # ------------------------------------------------------------------------------------- search

    def search(self, base: str, query: Query, scope: Scope) -> list[tuple[str, Attributes]]:
        """A consistent snapshot of (DN, attribute set) of matching entries; attribute sets are shared,
        immutable by convention: copy before handing them out."""
        root = self.base if base == self.base.dn else self.find(base)
        if root is None:
            raise NoSuchObjectError(f"search base {base!r} does not exist")
        candidates, others = self._candidates(query)
        records: Iterable[Record]
        if candidates is None:
            records = self._scope(root, scope)
        elif scope == _SUBTREE and root is self.base:  # every entry is below the naming context
            records = sorted(candidates, key=_by_id) if len(candidates) > 1 else candidates
        else:
            records = sorted((r for r in candidates if _in_scope(r, root, scope)), key=_by_id)
        rest = query.rest
        found: list[tuple[str, Attributes]] = []
        for record in records:
            for bucket in others:
                if record not in bucket:
                    break
            else:
                attributes = record.attributes
                for item in rest:
                    if not item.matches(attributes):
                        break
                else:
                    found.append((record.dn, attributes))
        return found

    def candidates(self, query: Query) -> AbstractSet[Record] | None:
        """Entries that may match, from the equality index; None when the query needs a scan."""
        return self._candidates(query)[0]

    def _candidates(self, query: Query) -> tuple[AbstractSet[Record] | None, list[AbstractSet[Record]]]:
        """The smallest set the index narrows the query to (None: a scan), and the buckets of the keys
        that did not supply it: an entry of the set satisfies those keys' items when it is in each.

        Every search goes through here (a SCIM list: two keys, the type and ``userName``), so the keys'
        buckets and the smallest of them are found in one plain loop rather than ``map`` and ``min`` with
        a ``key`` function, which cost more in their set-up than the comparisons they make."""
        index = self._index
        buckets: list[AbstractSet[Record]] = []
        best: AbstractSet[Record] | None = None
        for key in query.keys:
            bucket = index.get(key)
            if bucket is None:  # a key without entries (the index keeps no empty bucket): nothing matches
                return _NOTHING, []
            buckets.append(bucket)
            if best is None or len(bucket) < len(best):  # the first of the smallest, as min() would pick
                best = bucket
        keyed = best  # the key bucket chosen, unless a narrowing conjunct does better
        for item in query.narrowing:
            if best is not None and not best:
                break
            found = self.plan(item)
            if found is not None and (best is None or len(found) < len(best)):
                best, keyed = found, None
        if keyed is not None:
            buckets.remove(keyed)  # the first bucket equal to it: the same entries, so either one will do
        return best, buckets

    def plan(self, node: ldapfilter.Filter) -> AbstractSet[Record] | None:
        """Entries that may match, from the equality index; None when the filter needs a scan."""
        if isinstance(node, ldapfilter.Equality | ldapfilter.Approx):
            return self._index.get(key_of(node), _NOTHING)
        if isinstance(node, ldapfilter.And):
            best: AbstractSet[Record] | None = None
            for child in node.children:
                found = self.plan(child)
                if found is not None and (best is None or len(found) < len(best)):
                    best = found
                    if not best:
                        break
            return best
        if isinstance(node, ldapfilter.Or):
            union: set[Record] = set()
            for child in node.children:
                found = self.plan(child)
                if found is None:
                    return None
                union |= found
            return union
        return None

    def _scope(self, root: Record, scope: Scope) -> Iterator[Record]:
        if scope == Scope.BASE:
            yield root
        elif scope == Scope.ONELEVEL:
            yield from list(root.children.values())
        else:
            stack = [root]
            while stack:
                record = stack.pop()
                yield record
                stack.extend(reversed(record.children.values()))

    # ------------------------------------------------------------------------------------- internals

    def _insert(self, dn: str, parent: Record | None, attrs: Attributes) -> Record:
        self._next_id += 1
        record = Record(self._next_id, dn, dnlib.normalize(dn), parent, attrs)
        self._by_key[record.key] = record
        if parent is not None:
            parent.children[record.id] = record
        index = self._index
        for name, values in attrs.items():
            indexed = index_name(name)
            if indexed is None:
                continue
            for value in values:
                key = (indexed, normalize_value(name, value))
                bucket = index.get(key)
                if bucket is None:
                    index[key] = {record}
                else:
                    bucket.add(record)
        return record

    def _swap(self, record: Record, attrs: Attributes) -> None:
        old, record.attributes = record.attributes, attrs
        self._reindex(record, old, attrs)

    def _unindex(self, record: Record, attrs: Attributes) -> None:
        for name, values in attrs.items():
            indexed = index_name(name)
            if indexed is None:
                continue
            for value in values:
                self._index_discard((indexed, normalize_value(name, value)), record)

    def _index_discard(self, key: IndexKey, record: Record) -> None:
        bucket = self._index.get(key)
        if bucket is not None:
            bucket.discard(record)
            if not bucket:
                del self._index[key]

    def _reindex(self, record: Record, old: Attributes, new: Attributes) -> None:
        """Move ``record`` in the index from the values of ``old`` to those of ``new``. An attribute ``new``
        holds as the very same (spelling, values) pair as ``old`` (``Attributes.sharing_values``, then
        untouched) is skipped at once."""
        old_table, new_table = old.by_key, new.by_key
        held_of = old_table.get
        for key, item in new_table.items():
            held = held_of(key)
            if held is not item:
                self._reindex_values(record, key, [] if held is None else held[1], item[1])
        if not old_table.keys() <= new_table.keys():
            for key, (_, before) in old_table.items():
                if key not in new_table:
                    self._reindex_values(record, key, before, [])

    def _reindex_values(self, record: Record, name: str, before: list[AttrValue], after: list[AttrValue]) -> None:
        """Move ``record`` in the index from ``before`` to ``after``, the values of attribute ``name``
        (lower case)."""
        indexed = index_name(name)
        if before == after or indexed is None:
            return
        old_keys = {normalize_value(name, value) for value in before}
        new_keys = {normalize_value(name, value) for value in after}
        for key in old_keys - new_keys:
            self._index_discard((indexed, key), record)
        for key in new_keys - old_keys:
            self._index.setdefault((indexed, key), set()).add(record)

    def _rekey(self, record: Record, new_dn: str, moved: list[tuple[Record, str]]) -> None:
        old_dn = record.dn
        del self._by_key[record.key]
        record.dn, record.key = new_dn, dnlib.normalize(new_dn)
        self._by_key[record.key] = record
        moved.append((record, old_dn))
        for child in record.children.values():
            self._rekey(child, dnlib.join(dnlib.rdn(child.dn), new_dn), moved)

    def _check_rdn(self, dn: str, attrs: Attributes, *, adding: bool) -> None:
        rdns = dnlib.parse(dn)
        if not rdns:
            raise NotAllowedError("the empty DN cannot hold an entry")
        for ava in rdns[0].avas:
            present = attrs.get(ava.attribute, [])
            key = normalize_value(ava.attribute, ava.value)
            if any(normalize_value(ava.attribute, value) == key for value in present):
                continue
            if not adding:
                raise NotAllowedError(f"cannot remove the RDN value {ava.attribute}={ava.value!r} (notAllowedOnRDN)")
            if not self.operational.adds_rdn_values:
                raise ConstraintError(f"RDN value {ava.attribute}={ava.value!r} is not in the entry (namingViolation)")
            attrs.set(ava.attribute, [*present, ava.value])

    def _apply(self, attrs: Attributes, change: Modification) -> None:
        name = change.attribute
        if name.lower() in self.operational.system:
            raise ConstraintError(f"{name!r} is maintained by the directory (noUserModification)")
        if change.op is ModOp.REPLACE:
            attrs.set(name, _values(name, change.values) if change.values else [])
            return
        if change.op is ModOp.ADD:
            if not change.values:
                raise ConstraintError(f"adding no values to {name!r}")
            new = _values(name, change.values)
            current = attrs.get(name, [])
            existing = {normalize_value(name, value) for value in current}
            for value in new:
                if normalize_value(name, value) in existing:
                    raise ConstraintError(f"{name!r} already has the value {value!r} (attributeOrValueExists)")
            attrs.set(name, [*current, *new])
            return
        if name not in attrs:
            raise ConstraintError(f"cannot delete {name!r}: the entry has no such attribute (noSuchAttribute)")
        if not change.values:
            attrs.remove(name)
            return
        _remove_values(attrs, name, _values(name, change.values), strict=True)


def _without(name: str, values: list[AttrValue], removed: Sequence[AttrValue]) -> list[AttrValue]:
    gone = {normalize_value(name, value) for value in removed}
    return [value for value in values if normalize_value(name, value) not in gone]


def _remove_values(attrs: Attributes, name: str, removed: Sequence[AttrValue], *, strict: bool = False) -> None:
    current = attrs.get(name, [])
    if strict:
        present = {normalize_value(name, value) for value in current}
        for value in removed:
            if normalize_value(name, value) not in present:
                raise ConstraintError(f"{name!r} has no value {value!r} to delete (noSuchAttribute)")
    attrs.set(name, _without(name, current, removed))


_by_id = attrgetter("id")


def _in_scope(record: Record, root: Record, scope: Scope) -> bool:
    if scope == Scope.BASE:
        return record is root
    if scope == Scope.ONELEVEL:
        return record.parent is root
    node: Record | None = record
    while node is not None:
        if node is root:
            return True
        node = node.parent
    return False


def _base_attributes(base_dn: str, operational: Operational) -> Attributes:
    leaf = dnlib.parse(base_dn)[0].avas[0]
    kind = leaf.attribute.lower()
    classes = {
        "dc": ["top", "domain", "domainDNS"] if operational.adds_rdn_values else ["top", "dcObject", "organization"],
        "o": ["top", "organization"],
        "ou": ["top", "organizationalUnit"],
    }.get(kind, ["top", "extensibleObject"])
    attrs = Attributes({"objectClass": classes, leaf.attribute: [leaf.value]})
    if kind == "dc" and not operational.adds_rdn_values:
        attrs.set("o", [leaf.value])
    operational.on_add(attrs)
    return attrs
