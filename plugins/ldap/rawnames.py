"""Which attributes a search keeps as bytes, in the form bonsai scans fastest while it parses a reply.

Settings: none. Guarantees:
- ``raw_named`` gives the names of a search that lists its attributes: all of them are kept as bytes, so
  their values arrive exactly as stored (bonsai turns text that parses as an integer into an ``int``).
- The list is short on purpose: bonsai compares every attribute name of every entry with the listed
  names until one matches (two copies and two allocations per comparison); ``RawNames`` holds them
  UTF-8 encoded (bonsai encodes a ``str`` at every comparison) and, once an entry has been seen, in the
  order the server returns them, and bonsai iterates them through a ``RawCursor`` that starts each
  attribute's scan after the name the previous one matched. Which names match, hence which values stay
  bytes, is the same as with the plain list.
- Compiled (pyproject's ``[tool.cloudprov] compiled``): bonsai asks the cursor for an iterator at every
  attribute of every entry, through the C slot of a compiled class instead of a Python method.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from mypy_extensions import mypyc_attr


def raw_named(attributes: list[str]) -> list[str] | None:
    """The attributes to keep as bytes for a search asking for ``attributes``: all it names (options
    dropped), so every value arrives as stored; None when it may return attributes it does not name
    (``*``, ``+``, or a name given as an OID, which comes back under its name): the binary list."""
    named: dict[str, str] = {}
    for name in attributes:
        if name == "1.1":  # no attributes at all
            continue
        if name in ("*", "+") or name[:1].isdigit():
            return None
        plain = name.partition(";")[0]
        named.setdefault(plain.lower(), plain)
    return list(named.values())


@mypyc_attr(native_class=False)  # a list: compiled classes cannot subclass one
class RawNames(list[bytes]):
    """``raw_named(attributes)`` as bonsai compares it fastest: UTF-8 encoded, and (after ``learn``) in the
    order the server returns the attributes.

    For every attribute of every entry, bonsai scans this list until a name matches (ignoring case),
    copying both names at each comparison: with the list in the server's order an entry's n-th
    attribute matches at the n-th name, not wherever the caller's (often alphabetical) order put it.
    The order changes only the cost: membership, hence which values stay bytes, is the same.
    """

    __slots__ = ("cursor", "ordered")

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__(name.encode() for name in names)
        self.ordered = False
        self.cursor = RawCursor(self)

    def learn(self, returned: Iterable[str]) -> None:
        """Put first the names in ``returned`` (an entry's attribute names, in the server's order), in
        that order; the others keep theirs after them. Done once: ``ordered`` is then True."""
        position: dict[bytes, int] = {}
        for name in returned:
            position.setdefault(name.lower().encode(), len(position))
        last = len(position)
        # a stable sort by position, written out: compiled, a sort key closing over ``position`` fails to build
        ranked = [(position.get(name.lower(), last), index, name) for index, name in enumerate(self)]
        ranked.sort()
        self[:] = [name for _, _, name in ranked]
        self.cursor = RawCursor(self)
        self.ordered = True

    @classmethod
    def named(cls, attributes: list[str]) -> RawNames | None:
        """The ``RawNames`` of a search asking for ``attributes`` (None: the client's binary list)."""
        names = raw_named(attributes)
        return None if names is None else cls(names)


#: Lists of more names are not rotated (see ``RawCursor``).
_ROTATED_AT_MOST = 64


class RawCursor:
    """``RawNames`` as bonsai iterates them while it parses a reply: every name, for each attribute of an
    entry, but starting after the name that the entry's previous attribute matched.

    bonsai iterates its list anew for each attribute (``iter``, then compares name after name until one
    matches): with the list in the server's order, the n-th attribute of an entry was found after n
    comparisons. Here each ``iter`` gives a rotation of the whole list (so an attribute is found, or
    not, exactly as in the list) that starts where the previous attribute was found, read off how far
    bonsai went through the previous iterator; the entry's next attribute is then found at the first
    comparison. ``PluginClient.raw_attributes`` (read once per entry) starts each entry at the top.
    """

    __slots__ = ("_after", "_last", "_rotations", "_start")

    def __init__(self, names: list[bytes]) -> None:
        count = len(names)
        # longer lists (rare: a search naming many attributes) are scanned from the top: rotations cost count²
        rotated = range(count) if count <= _ROTATED_AT_MOST else range(min(count, 1))
        self._rotations = [names[at:] + names[:at] for at in rotated] or [[]]
        size = len(self._rotations)
        # bonsai stopped at the name that matched: the next scan starts after it (none matched: where it
        # started); _after[start][names left in the iterator] is that start
        self._after = [[(start + size - left) % size for left in range(count + 1)] for start in range(size)]
        self._start = 0
        self._last: Any = None  # the list iterator handed out last (None: the entry's first attribute)

    def __iter__(self) -> Iterator[bytes]:
        last = self._last
        start = 0 if last is None else self._after[self._start][last.__length_hint__()]
        self._start = start
        self._last = found = iter(self._rotations[start])
        return found
