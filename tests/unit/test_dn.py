"""RFC 4514 DN parsing, escaping and comparison (plugins.dn)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins import dn
from plugins.directory import InvalidDNError

ATTRIBUTE_TYPES = st.sampled_from(["cn", "uid", "ou", "dc", "sn", "CN", "2.5.4.3"])
VALUES = st.text()


@given(VALUES)
def test_escape_then_parse_gives_the_exact_value(value: str) -> None:
    """Any RDN value survives escape_value + parse unchanged, whatever characters it holds."""
    parsed = dn.parse(f"cn={dn.escape_value(value)},ou=People,dc=example,dc=com")
    assert len(parsed) == 4
    assert parsed[0].avas == (dn.AVA("cn", value),)


@given(VALUES)
def test_unescape_inverts_escape(value: str) -> None:
    """unescape_value(escape_value(v)) == v for arbitrary text."""
    assert dn.unescape_value(dn.escape_value(value)) == value


@given(st.lists(st.lists(st.tuples(ATTRIBUTE_TYPES, VALUES), min_size=1, max_size=3), min_size=1, max_size=4))
def test_to_string_parse_round_trip(rdns: list[list[tuple[str, str]]]) -> None:
    """A DN built from arbitrary (multi-valued) RDNs prints to a string that parses back to itself."""
    built = tuple(dn.RDN(tuple(dn.AVA(name, value) for name, value in avas)) for avas in rdns)
    assert dn.parse(dn.to_string(built)) == built


@given(st.text(alphabet="abcXYZ -_.", min_size=1), st.text(alphabet="abcXYZ -_.", min_size=1))
def test_normalize_ignores_case_and_insignificant_spaces(leaf: str, container: str) -> None:
    """Two spellings differing only in case, attribute-type case and spacing around separators normalise alike."""
    left = f"cn={dn.escape_value(leaf)},ou={dn.escape_value(container)},dc=example,dc=com"
    right = f"CN={dn.escape_value(leaf.upper())} , OU={dn.escape_value(container.swapcase())},DC=Example,DC=COM"
    assert dn.normalize(left) == dn.normalize(right)


@given(VALUES)
def test_escaped_comma_never_makes_a_descendant(value: str) -> None:
    """A single RDN whose value ends in ',dc=com' is not a descendant of dc=com."""
    single = f"cn={dn.escape_value(value + ',dc=com')}"
    assert not dn.is_descendant(single, "dc=com")
    assert dn.is_descendant(f"{single},dc=com", "dc=com")


def test_parse_multi_valued_rdn_and_hex_escapes() -> None:
    """'+' separates AVAs of one RDN and \\XX pairs decode as UTF-8."""
    parsed = dn.parse("cn=Ren\\C3\\A9e+sn=Smith\\2c Jr,dc=example")
    assert parsed[0] == dn.RDN((dn.AVA("cn", "Renée"), dn.AVA("sn", "Smith, Jr")))
    assert parsed[1] == dn.RDN((dn.AVA("dc", "example"),))


def test_escape_covers_every_special_character() -> None:
    """escape_value escapes , + " \\ < > ; = anywhere, '#' and space at the start, space at the end, NUL."""
    assert dn.escape_value('a,b+c"d\\e<f>g;h=i') == 'a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i'
    assert dn.escape_value("#x#") == "\\#x#"
    assert dn.escape_value(" a b ") == "\\ a b\\ "
    assert dn.escape_value("a\x00b") == "a\\00b"
    assert dn.escape_value("été") == "été"


def test_lenient_spaces_are_dropped_but_escaped_ones_kept() -> None:
    """Unescaped spaces around separators vanish; escaped leading/trailing spaces are part of the value."""
    assert dn.parse(" cn = a , dc=x ")[0].avas[0].value == "a"
    assert dn.parse("cn=\\ a\\ ,dc=x")[0].avas[0].value == " a "
    assert dn.parse("cn=a\\20,dc=x")[0].avas[0].value == "a "


def test_hexstring_value_decodes_ber_string() -> None:
    """A '#'-prefixed BER OCTET STRING value decodes to its text."""
    assert dn.parse("cn=#0403616263")[0].avas[0].value == "abc"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cn", "expected '='"),
        ("=x", "expected an attribute type"),
        ("cn=a,", "RDN is missing"),
        ("cn=a,,dc=x", "expected an attribute type"),
        ("cn=a\\", "dangling backslash"),
        ("cn=a\\q", "invalid escape"),
        ("cn=a;b", "unescaped ';'"),
        ('cn=a"b', "unescaped '\"'"),
        ("cn=\\ff\\fe", "not UTF-8"),
        ("cn=#zz", "hexstring"),
        ("1..2=x", "numeric OID"),
    ],
)
def test_bad_dns_raise_invalid_dn_error_naming_the_problem(text: str, problem: str) -> None:
    """Malformed DNs raise InvalidDNError whose message says what is wrong."""
    with pytest.raises(InvalidDNError, match=problem.replace("\\", "\\\\").replace("(", "\\(")):
        dn.parse(text)


def test_parent_rdn_join_and_descendant() -> None:
    """parent/rdn/join take a DN apart and back together; is_descendant is strict unless or_self."""
    entry = "uid=a\\,b,ou=People,dc=example,dc=com"
    assert dn.rdn(entry) == "uid=a\\,b"
    assert dn.parent(entry) == "ou=People,dc=example,dc=com"
    assert dn.join(dn.rdn(entry), dn.parent(entry)) == entry
    assert dn.parent("dc=com") == ""
    assert dn.is_descendant(entry, "DC=EXAMPLE,dc=com")
    assert not dn.is_descendant("dc=example,dc=com", "dc=example,dc=com")
    assert dn.is_descendant("dc=example,dc=com", "dc=example,dc=com", or_self=True)
    assert not dn.is_descendant("ou=x,dc=other,dc=com", "dc=example,dc=com")
    with pytest.raises(InvalidDNError):
        dn.parent("")
    with pytest.raises(InvalidDNError, match="single RDN"):
        dn.join("cn=a,dc=b", "dc=c")


def test_normalize_maps_oids_and_orders_multi_valued_rdns() -> None:
    """OID attribute types and AVA order inside an RDN do not change the normalised DN."""
    assert dn.normalize("2.5.4.3=John+sn=Doe,dc=X") == dn.normalize("SN=doe+CN=john,DC=x")
    assert dn.normalize("cn=John   Smith") == dn.normalize("cn=john smith")
    assert dn.normalize("cn=a,dc=x") != dn.normalize("cn=b,dc=x")


@pytest.mark.parametrize(
    ("dns", "joined"),
    [
        (["dc=example", "dc=com"], "dc=example,dc=com"),
        (["OU=Staff", "DC=corp", "DC=example", "DC=com"], "OU=Staff,DC=corp,DC=example,DC=com"),
        (["ou=people", "o=Example"], "ou=people,o=Example"),
    ],
)
def test_a_dn_split_by_yaml_is_recognised(dns: list[str], joined: str) -> None:
    """One-RDN pieces that read as one DN (``[dc=example,dc=com]`` unquoted in YAML) are put back together."""
    assert dn.split_by_yaml(dns) == joined


@pytest.mark.parametrize(
    "dns",
    [
        ["dc=example,dc=com"],
        ["ou=people,dc=example,dc=com", "ou=groups,dc=example,dc=com"],
        ["o=org1", "o=org2"],
        ["o=org1", "dc=example"],
        ["ou=people", "ou=groups"],
        ["dc=com"],
        [],
    ],
)
def test_separate_base_dns_are_not_taken_for_a_split(dns: list[str]) -> None:
    """Whole DNs, and one-RDN trees that may well be separate naming contexts, are left alone."""
    assert dn.split_by_yaml(dns) is None
