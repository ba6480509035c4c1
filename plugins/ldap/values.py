"""Value conversions between bonsai and ``plugins.directory`` entries.

Settings: none. Guarantees:
- values that bonsai kept as bytes (``connection.py``: every attribute a search names) come back
  exactly as stored: text decoded as UTF-8 (bytes when it is not UTF-8), the ``binary`` attributes
  as ``bytes``. Values bonsai converted (searches for ``*``) are turned back into text: ``bool`` as
  ``TRUE``/``FALSE``, ``int`` as its decimal form, which is the stored text unless that was another
  spelling of the number (``+7``, ``0x10``, ``1_000``: the reason searches name their attributes);
- ranged attributes (``member;range=0-1499``) are recognised by ``parse_range`` so the directory can
  fetch the rest and merge them under the plain name;
- ``fold_modifications`` turns a sequence of per-attribute changes into at most one REPLACE, or one
  ADD and one DELETE of values, per attribute (bonsai holds one value list per attribute and sends
  its adds before its deletes), with the outcome LDAP's sequential meaning has when it succeeds: a
  value deleted and added again (or added and deleted again) cancels out; deleting a whole attribute
  stays a delete (an absent attribute is an error, as in LDAP) unless values are added after it;
- ``encode_unicode_pwd`` gives AD's quoted UTF-16-LE password form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugins.directory import Attributes, AttrValue, Entry, Modification, ModOp
from plugins.ldap.gcpause import call_paused

_items = dict.items
_RANGE = re.compile(r"^(?P<name>[^;]+(?:;(?!range=)[^;]+)*);range=(?P<low>\d+)-(?P<high>\d+|\*)$", re.IGNORECASE)


def to_value(value: Any) -> AttrValue:
    if isinstance(value, bytes | str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


def to_entry(found: Any, binary: frozenset[str]) -> Entry:
    """A ``plugins.directory.Entry`` from a bonsai ``LDAPEntry``."""
    return to_entries((found,), binary)[0][0]


def to_entries(found: Iterable[Any], binary: frozenset[str]) -> tuple[list[Entry], list[Entry]]:
    """``Entry`` objects from bonsai ``LDAPEntry`` objects, and those among them with an attribute name
    that carries options (``member;range=0-1499``), which may need ranged retrieval. ``binary``: the
    lower-case names whose ``bytes`` stay ``bytes``; other ``bytes`` are text, decoded.

    One pass per page: a full read converts every entry it lists, so this loop is kept flat. Given
    bonsai's page itself (not a list of it), each bonsai entry is freed as soon as it is converted,
    and the garbage collector is paused meanwhile (``gcpause.py``).
    """
    return call_paused(_convert, found, binary)


def _text(value: bytes) -> AttrValue:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


def _convert(found: Iterable[Any], binary: frozenset[str]) -> tuple[list[Entry], list[Entry]]:
    entries: list[Entry] = []
    optioned: list[Entry] = []
    for item in found:
        pairs: list[tuple[str, list[AttrValue]]] = []
        options = False
        for name, values in _items(item):  # bonsai's items(exclude_dn=True) costs a generator more
            if name == "dn":
                continue
            if ";" in name:
                options = True
            if len(values) == 1:  # most attributes: ``_text`` inlined
                value = values[0]
                kind = type(value)
                if kind is bytes:
                    if name.lower() not in binary:
                        try:  # noqa: SIM105 - suppress() costs an object and two calls per value
                            value = value.decode()
                        except UnicodeDecodeError:
                            pass
                elif kind is not str:
                    value = to_value(value)
                pairs.append((name, [value]))
            elif values and type(values[0]) is bytes and name.lower() not in binary:
                pairs.append((name, [_text(v) for v in values]))
            else:
                pairs.append((name, [v if type(v) is str or type(v) is bytes else to_value(v) for v in values]))
        entry = Entry(str(item.dn), Attributes.adopt(pairs))
        entries.append(entry)
        if options:
            optioned.append(entry)
    return entries, optioned


@dataclass(frozen=True, slots=True)
class Range:
    attribute: str
    low: int
    high: int | None  # None: this was the last chunk


def parse_range(name: str) -> Range | None:
    """``member;range=0-1499`` → Range("member", 0, 1499); ``…;range=1500-*`` → high None."""
    match = _RANGE.match(name)
    if match is None:
        return None
    high = match["high"]
    return Range(match["name"], int(match["low"]), None if high == "*" else int(high))


def ranged_names(attributes: Attributes) -> list[str]:
    return [name for name in attributes if ";range=" in name.lower()]


@dataclass(slots=True)
class _Fold:
    replace: list[AttrValue] | None = None
    add: list[AttrValue] = field(default_factory=list)
    delete: list[AttrValue] = field(default_factory=list)
    delete_all: bool = False


def fold_modifications(changes: Sequence[Modification]) -> list[Modification]:
    """At most one REPLACE, or one ADD and/or one DELETE of values, per attribute, same outcome."""
    folded: dict[str, tuple[str, _Fold]] = {}
    for change in changes:
        name, state = folded.setdefault(change.attribute.lower(), (change.attribute, _Fold()))
        values = list(change.values)
        if change.op is ModOp.REPLACE:
            state.replace, state.add, state.delete, state.delete_all = values, [], [], False
        elif change.op is ModOp.DELETE and not values:
            if state.replace is not None or state.add:  # present after the earlier changes: empty it
                state.replace, state.add, state.delete = [], [], []
            else:  # kept as is: LDAP says noSuchAttribute if absent
                state.replace, state.add, state.delete, state.delete_all = None, [], [], True
        elif state.delete_all:
            if change.op is ModOp.ADD:
                state.replace, state.delete_all = values, False
        elif state.replace is not None:
            if change.op is ModOp.ADD:
                state.replace.extend(v for v in values if v not in state.replace)
            else:
                state.replace = [v for v in state.replace if v not in values]
        elif change.op is ModOp.ADD:  # deleted then added again: where LDAP succeeds, nothing changes
            state.add.extend(v for v in values if v not in state.delete)
            state.delete = [v for v in state.delete if v not in values]
        else:  # a value added and deleted again in the same modify: neither
            state.delete.extend(v for v in values if v not in state.add)
            state.add = [v for v in state.add if v not in values]
    result: list[Modification] = []
    for name, state in folded.values():
        if state.delete_all:
            result.append(Modification(ModOp.DELETE, name, ()))
            continue
        if state.replace is not None:
            result.append(Modification(ModOp.REPLACE, name, tuple(state.replace)))
            continue
        if state.delete:
            result.append(Modification(ModOp.DELETE, name, tuple(state.delete)))
        if state.add:
            result.append(Modification(ModOp.ADD, name, tuple(state.add)))
    return result


def encode_unicode_pwd(value: AttrValue) -> bytes:
    """AD's unicodePwd value: the password in double quotes, UTF-16-LE (bytes pass through)."""
    if isinstance(value, bytes):
        return value
    return f'"{value}"'.encode("utf-16-le")


def is_unicode_pwd(name: str) -> bool:
    return name.lower() == "unicodepwd"
