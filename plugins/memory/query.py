"""Search plans of the memory directory: a filter worked out once into index keys and what is left to check.

No settings. ``Query.of(node)`` splits a filter into its conjuncts (the children of a top-level AND, else
the filter itself):
- ``keys``: the equality and approx items, one equality-index key each. The index is exact (see
  ``plugins.memory.store``): an entry is in a key's bucket exactly when the item matches it, so a
  search decides these items by set membership, with no value normalised;
- ``narrowing``: the other conjuncts the index can narrow (an OR of indexed items, a nested AND);
- ``rest``: every conjunct that is not a key, evaluated with ``Filter.matches`` on each candidate.

``Plans`` makes and keeps plans for a directory: by filter string, and for ``(&…(attr=value))`` (a lookup
by a new value each time, the SCIM agent's usual search) also by everything but the value, so such a
filter with a new value costs a decoded value and a key, not a parse and a plan.

Guarantees: a query depends on the filter alone, never on the data, so it stays valid across every
write and a directory may keep it (bounded) as long as it likes; ``check_evaluable`` has passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from plugins import ldapfilter
from plugins.directory import AttrValue
from plugins.ldapfilter import Normalized

#: (lower-case attribute name without options, normalised value).
IndexKey = tuple[str, Normalized]


@lru_cache(maxsize=4096)
def index_name(name: str) -> str | None:
    """The index's name for an attribute description: lower-case; None for a name with options
    (``cn;lang-en``), which a filter on ``cn`` does not match, so the index leaves them out."""
    return None if ";" in name else name.lower()


def key_of(item: ldapfilter.Equality | ldapfilter.Approx) -> IndexKey:
    """The index key an equality or approx item looks up (the item's options are ignored, as when matching)."""
    return item.attribute.split(";", 1)[0].lower(), item.key


@dataclass(frozen=True, slots=True)
class Query:
    """A filter and its plan: index keys, conjuncts that narrow through the index, conjuncts to evaluate."""

    node: ldapfilter.Filter
    keys: tuple[IndexKey, ...]
    narrowing: tuple[ldapfilter.Filter, ...]
    rest: tuple[ldapfilter.Filter, ...]

    @classmethod
    def of(cls, node: ldapfilter.Filter) -> Query:
        """The plan of ``node``; raises ``InvalidFilterError`` when the memory directory cannot evaluate it."""
        ldapfilter.check_evaluable(node)
        keys: list[IndexKey] = []
        narrowing: list[ldapfilter.Filter] = []
        rest: list[ldapfilter.Filter] = []
        for item in ldapfilter.conjuncts(node):
            if isinstance(item, ldapfilter.Equality | ldapfilter.Approx):
                keys.append(key_of(item))
                continue
            if isinstance(item, ldapfilter.And | ldapfilter.Or):
                narrowing.append(item)
            rest.append(item)
        return cls(node, tuple(keys), tuple(narrowing), tuple(rest))


#: ``(&<other items>(attr=value))`` with a value of plain characters and ``\\XX`` escapes only (no ``*``,
#: no RFC 1960 escape): group 1 is everything before the value, group 2 the attribute, group 3 the value. The
#: value's plain characters are taken a run at a time, possessively (``++``: a run is never split again when
#: the rest fails, which would take time exponential in its length), not one repetition each: the same
#: matches, at half the cost.
_LAST_EQUALITY = re.compile(r"(\(&.*\(([A-Za-z][A-Za-z0-9-]*)=)((?:[^*()\\\x00]++|\\[0-9A-Fa-f]{2})*)\)\)")
#: Plans kept by filter string, and by the text before the value.
_PLANS = 4096
_SHAPES = 256


@dataclass(frozen=True, slots=True)
class _Shape:
    """The plan of ``(&<others>(attribute=value))`` but for the last item: its parts from the others."""

    others: tuple[ldapfilter.Filter, ...]
    attribute: str
    keys: tuple[IndexKey, ...]
    narrowing: tuple[ldapfilter.Filter, ...]
    rest: tuple[ldapfilter.Filter, ...]

    @classmethod
    def of(cls, query: Query, attribute: str, value: AttrValue) -> _Shape | None:
        """The shape of ``query``'s filter, if it is an AND whose last child is ``(attribute=value)``."""
        node = query.node
        if not isinstance(node, ldapfilter.And) or not node.children:
            return None
        last = node.children[-1]
        if not isinstance(last, ldapfilter.Equality) or last.attribute != attribute or last.value != value:
            return None
        return cls(node.children[:-1], attribute, query.keys[:-1], query.narrowing, query.rest)

    def query(self, value: AttrValue) -> Query:
        """The plan of the filter with ``value`` in the last item."""
        last = ldapfilter.Equality(self.attribute, value)
        return Query(ldapfilter.And((*self.others, last)), (*self.keys, key_of(last)), self.narrowing, self.rest)


class Plans:
    """A directory's plans, by filter string (up to 4,096 filters of up to ``ldapfilter.CACHED_LENGTH``
    characters) and by shape (``(&…(attr=value))`` but the value, up to 256 shapes)."""

    __slots__ = ("_by_shape", "_by_text")

    def __init__(self) -> None:
        self._by_text: dict[str, Query] = {}
        self._by_shape: dict[str, _Shape | None] = {}

    def __len__(self) -> int:
        return len(self._by_text)

    def __contains__(self, ldap_filter: str) -> bool:
        return ldap_filter in self._by_text

    def get(self, ldap_filter: str) -> Query:
        """The plan of ``ldap_filter``; raises ``InvalidFilterError`` as ``ldapfilter.parse`` and ``Query.of`` do."""
        query = self._by_text.get(ldap_filter) if isinstance(ldap_filter, str) else None
        if query is not None:
            return query
        if not isinstance(ldap_filter, str) or len(ldap_filter) > ldapfilter.CACHED_LENGTH:
            return Query.of(ldapfilter.parse(ldap_filter))
        query = self._by_value(ldap_filter)
        if query is None:
            query = Query.of(ldapfilter.parse(ldap_filter))
        if len(self._by_text) >= _PLANS:
            self._by_text.clear()
        self._by_text[ldap_filter] = query
        return query

    def _by_value(self, ldap_filter: str) -> Query | None:
        """The plan from the filter's shape, made (from this filter, parsed) the first time it is seen."""
        found = _LAST_EQUALITY.fullmatch(ldap_filter)
        if found is None:
            return None
        head, attribute, raw = found.groups()
        value = ldapfilter.decode_value(raw)
        shape = self._by_shape.get(head, _UNSEEN)
        if shape is _UNSEEN:
            query = Query.of(ldapfilter.parse(ldap_filter))
            if len(self._by_shape) >= _SHAPES:
                self._by_shape.clear()
            self._by_shape[head] = _Shape.of(query, attribute, value)
            return query
        return None if shape is None else shape.query(value)


_UNSEEN: _Shape | None = _Shape((), "", (), (), ())
