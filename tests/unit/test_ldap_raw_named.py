"""``raw_named``: which attributes a search keeps as bytes, given the attributes it asks for."""

from __future__ import annotations

from plugins.ldap.connection import raw_named


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
