"""``raw_named``: which attributes a search keeps as bytes, given the attributes it asks for."""

from __future__ import annotations

from plugins.ldap.connection import RawNames, raw_named


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
