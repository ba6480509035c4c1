"""``binary_among``: which binary attributes a search can return, given the attributes it asks for."""

from __future__ import annotations

from plugins.ldap.connection import binary_among

BINARY = ["jpegPhoto", "objectGUID", "userCertificate"]


def test_named_binary_attributes_are_kept_in_the_configured_spelling() -> None:
    """Names match case-insensitively; the configured spelling is what bonsai compares."""
    assert binary_among(BINARY, ["cn", "OBJECTGUID", "mail"]) == ["objectGUID"]


def test_no_binary_attribute_asked_gives_an_empty_list() -> None:
    """A search for text attributes only (or for no attributes, 1.1) needs no binary list."""
    assert binary_among(BINARY, ["cn", "mail", "entryUUID"]) == []
    assert binary_among(BINARY, ["1.1"]) == []


def test_options_are_ignored_when_matching() -> None:
    """``userCertificate;binary`` asks for userCertificate."""
    assert binary_among(BINARY, ["userCertificate;binary"]) == ["userCertificate"]


def test_wildcards_and_oids_can_return_any_binary_attribute() -> None:
    """``*``, ``+`` and OIDs (answered under the attribute's name) keep the whole list."""
    assert binary_among(BINARY, ["*"]) is None
    assert binary_among(BINARY, ["cn", "+"]) is None
    assert binary_among(BINARY, ["2.5.4.3"]) is None
