"""``raw_named``: which attributes a search keeps as bytes, given the attributes it asks for."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st

from plugins.ldap.connection import RawNames, raw_named

NAMES = ["cn", "CN", "mail", "sn", "uid", "telephoneNumber", "employeeNumber", "title", "objectClass"]


def test_every_named_attribute_is_kept_as_bytes_once() -> None:
    """A search naming its attributes gets all their values as stored (names compared ignoring case)."""
    assert raw_named(["cn", "telephoneNumber", "CN", "objectGUID"]) == ["cn", "telephoneNumber", "objectGUID"]


def test_options_are_dropped_and_no_attributes_names_none() -> None:
    """``userCertificate;binary`` asks for userCertificate; ``1.1`` asks for no attribute."""
    assert raw_named(["userCertificate;binary", "1.1"]) == ["userCertificate"]
    assert raw_named(["1.1"]) == []


def test_wildcards_and_oids_keep_the_binary_list() -> None:
    """``*``, ``+`` and OIDs (answered under the attribute's name) may return unnamed attributes."""
    assert raw_named(["*"]) is None
    assert raw_named(["cn", "+"]) is None
    assert raw_named(["2.5.4.3"]) is None


def test_raw_names_are_encoded_and_learn_the_servers_order_without_changing_membership() -> None:
    """``RawNames`` holds the same names as ``raw_named`` (UTF-8 bytes); ``learn`` puts those an entry
    returned first, in its order (names compared ignoring case), and keeps the rest after them."""
    assert RawNames.named(["cn", "+"]) is None
    names = RawNames.named(["cn", "mail", "telephoneNumber", "uid", "CN"])
    assert names == [b"cn", b"mail", b"telephoneNumber", b"uid"]
    assert names is not None
    assert not names.ordered
    names.learn(["objectClass", "UID", "member;range=0-1", "TelephoneNumber", "uid"])
    assert names == [b"uid", b"telephoneNumber", b"cn", b"mail"]
    assert names.ordered


def bonsai_keeps_bytes(raw: Iterable[bytes], name: str) -> bool:
    """What bonsai does for each attribute of an entry: iterate its list anew, compare names ignoring case,
    stop at the first match (``unique_contains`` in bonsai's C code)."""
    return any(listed.lower() == name.encode().lower() for listed in raw)


@given(
    listed=st.lists(st.sampled_from(NAMES), unique_by=str.lower),
    entries=st.lists(st.lists(st.sampled_from([*NAMES, "member;range=0-9", "surname"]), max_size=12), max_size=4),
)
def test_the_parse_cursor_finds_exactly_the_listed_names(listed: list[str], entries: list[list[str]]) -> None:
    """Whatever order and repetitions an entry's attributes come in, each is found in the cursor exactly
    when it is one of the names (ignoring case), as in the plain list; learning an order changes nothing."""
    names = RawNames(listed)
    for learned in (False, True):
        if learned and entries and entries[0]:
            names.learn(entries[0])
        for entry in entries:
            cursor = names.cursor
            cursor._last = None  # as PluginClient.raw_attributes does for each entry
            for name in entry:
                assert bonsai_keeps_bytes(cursor, name) == bonsai_keeps_bytes(list(names), name)
                assert bonsai_keeps_bytes(cursor, name) == (name.lower() in {n.lower() for n in listed})


def test_the_parse_cursor_starts_after_the_previous_match() -> None:
    """An entry whose attributes come in the learned order finds each at the first comparison."""
    names = RawNames(["cn", "mail", "sn", "uid"])
    names.learn(["uid", "cn", "sn", "mail"])
    cursor = names.cursor
    cursor._last = None
    firsts = []
    for name in [b"uid", b"cn", b"sn", b"mail"]:
        compared = 0
        for listed in cursor:
            compared += 1
            if listed == name:
                break
        firsts.append(compared)
    assert firsts == [1, 1, 1, 1]


def test_a_long_list_is_scanned_whole_without_rotations() -> None:
    """Past 64 names the cursor hands out the list itself (rotations would cost the square of its length),
    still finding exactly the listed names."""
    listed = [f"attr{i}" for i in range(70)]
    names = RawNames(listed)
    cursor = names.cursor
    cursor._last = None
    for name in [*reversed(listed), "other", "ATTR3", "attr69"]:
        assert bonsai_keeps_bytes(cursor, name) == (name.lower() in listed)
    assert len(cursor._rotations) == 1
