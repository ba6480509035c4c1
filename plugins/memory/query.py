"""Search plans of the memory directory: a filter worked out once into index keys and what is left to check.

No settings. ``Query.of(node)`` splits a filter into its conjuncts (the children of a top-level AND, else
the filter itself):
- ``keys``: the equality and approx items, one equality-index key each. The index is exact (see
  ``plugins.memory.store``): an entry is in a key's bucket exactly when the item matches it, so a
  search decides these items by set membership, with no value normalised;
- ``narrowing``: the other conjuncts the index can narrow (an OR of indexed items, a nested AND);
- ``rest``: every conjunct that is not a key, evaluated with ``Filter.matches`` on each candidate.

Guarantees: a query depends on the filter alone, never on the data, so it stays valid across every
write and a directory may keep it (bounded) as long as it likes; ``check_evaluable`` has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from plugins import ldapfilter
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
