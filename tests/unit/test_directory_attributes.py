"""``plugins.directory.Attributes``: the copies that hot paths take give what the general methods give."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from plugins.directory import Attributes, AttrValue

NAMES = st.sampled_from(["cn", "CN", "sn", "mail", "objectClass", "entryUUID", "member", "title", "uid"])
VALUES = st.lists(st.one_of(st.text(min_size=1, max_size=5), st.binary(min_size=1, max_size=4)), max_size=3)
ATTRIBUTES = st.lists(st.tuples(NAMES, VALUES), max_size=8).map(Attributes)
KEYS = st.frozensets(NAMES.map(str.lower))


def _table(attributes: Attributes) -> list[tuple[str, str, list[AttrValue]]]:
    return [(key, spelled, values) for key, (spelled, values) in attributes.by_key.items()]


@given(ATTRIBUTES, KEYS)
def test_selected_is_picked_by_membership(attributes: Attributes, keys: frozenset[str]) -> None:
    """``selected(keys)`` keeps the same attributes, spellings, values and order as ``picked(keys.__contains__)``."""
    assert _table(attributes.selected(keys)) == _table(attributes.picked(keys.__contains__))


@given(ATTRIBUTES, KEYS)
def test_copies_share_no_value_list_with_the_original(attributes: Attributes, keys: frozenset[str]) -> None:
    """Changing a copy's values (``copy``, ``picked``, ``selected``) never changes the original."""
    before = _table(attributes.copy())
    for copied in (attributes.copy(), attributes.picked(lambda _: True), attributes.selected(keys)):
        for _, values in copied.by_key.values():
            values.append("changed")
    assert _table(attributes) == before
    assert _table(attributes.copy()) == _table(attributes)
