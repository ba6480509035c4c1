"""RFC 4515 filter parsing, printing, escaping and evaluation (plugins.ldapfilter)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins import ldapfilter as lf
from plugins.directory import Attributes, InvalidFilterError

NAMES = st.sampled_from(["cn", "uid", "mail", "objectClass", "sn;lang-en", "2.5.4.3"])
TEXT = st.text()
PIECE = st.text(min_size=1)
RULES = st.sampled_from([None, lf.BITWISE_AND, lf.BITWISE_OR, "caseExactMatch"])
NON_UTF8 = st.binary(min_size=1).filter(lambda raw: not _is_utf8(raw))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _raw(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _items() -> st.SearchStrategy[lf.Filter]:
    value = st.one_of(TEXT, NON_UTF8)
    return st.one_of(
        st.builds(lf.Present, NAMES),
        st.builds(lf.Equality, NAMES, value),
        st.builds(lf.Approx, NAMES, value),
        st.builds(lf.GreaterOrEqual, NAMES, value),
        st.builds(lf.LessOrEqual, NAMES, value),
        st.builds(
            lf.Substring,
            NAMES,
            st.one_of(st.none(), PIECE),
            st.lists(PIECE, max_size=3).map(tuple),
            st.one_of(st.none(), PIECE),
        ).filter(lambda node: node.initial is not None or node.any or node.final is not None),
        st.builds(lf.Extensible, NAMES, RULES, value),
    )


FILTERS = st.recursive(
    _items(),
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: lf.And(tuple(items))),
        st.lists(children, max_size=4).map(lambda items: lf.Or(tuple(items))),
        children.map(lf.Not),
    ),
    max_leaves=12,
)


@given(TEXT)
def test_escaped_text_parses_back_to_the_exact_value(value: str) -> None:
    """escape_value then parse gives back exactly the original string, as an equality assertion."""
    assert lf.parse(f"(cn={lf.escape_value(value)})") == lf.Equality("cn", value)


@given(st.binary())
def test_escaped_bytes_parse_back_to_the_same_octets(value: bytes) -> None:
    """escape_value of arbitrary bytes parses back to the same octets (text when they are UTF-8)."""
    node = lf.parse(f"(objectGUID={lf.escape_value(value)})")
    assert isinstance(node, lf.Equality)
    assert _raw(node.value) == value


@given(st.one_of(TEXT, st.binary()))
def test_escaped_values_are_printable_ascii_without_specials(value: str | bytes) -> None:
    """An escaped value never contains a character that could change a filter's structure."""
    escaped = lf.escape_value(value)
    assert escaped.isascii()
    assert escaped == "" or escaped.isprintable()
    assert not set(escaped) & set("*()\x00")


@given(TEXT, PIECE, TEXT)
def test_formatting_hostile_values_never_changes_structure(name: str, fragment: str, mail: str) -> None:
    """A filter template filled with escaped arbitrary values parses to exactly the intended AST."""
    text = (
        f"(&(objectClass=person)(|(uid={lf.escape_value(name)})(cn=*{lf.escape_value(fragment)}*))"
        f"(!(mail>={lf.escape_value(mail)})))"
    )
    expected = lf.And(
        (
            lf.Equality("objectClass", "person"),
            lf.Or((lf.Equality("uid", name), lf.Substring("cn", None, (fragment,), None))),
            lf.Not(lf.GreaterOrEqual("mail", mail)),
        )
    )
    assert lf.parse(text) == expected


@given(FILTERS)
def test_to_string_then_parse_round_trips(node: lf.Filter) -> None:
    """Printing any filter AST and parsing the result gives the same AST."""
    assert lf.parse(node.to_string()) == node


@given(TEXT)
def test_an_entry_matches_its_own_escaped_value(value: str) -> None:
    """An entry whose cn is any string is found by an equality filter built with escape_value."""
    entry = Attributes({"cn": [value] if value else ["x"]})
    wanted = value if value else "x"
    assert lf.parse(f"(cn={lf.escape_value(wanted)})").matches(entry)
    assert not lf.parse(f"(cn={lf.escape_value(wanted + 'z')})").matches(entry)


def test_parse_builds_every_item_type() -> None:
    """Each RFC 4515 item kind parses into its own node type."""
    node = lf.parse("(&(a=*)(b=x)(c~=y)(d>=1)(e<=2)(f=x*y*z)(g:1.2.840.113556.1.4.803:=2)(!(h=*i)))")
    assert node == lf.And(
        (
            lf.Present("a"),
            lf.Equality("b", "x"),
            lf.Approx("c", "y"),
            lf.GreaterOrEqual("d", "1"),
            lf.LessOrEqual("e", "2"),
            lf.Substring("f", "x", ("y",), "z"),
            lf.Extensible("g", lf.BITWISE_AND, "2"),
            lf.Not(lf.Substring("h", None, (), "i")),
        )
    )


def test_parse_is_cached() -> None:
    """The same filter string is parsed once and the immutable AST reused; a long one is not kept."""
    assert lf.parse("(uid=cached-one)") is lf.parse("(uid=cached-one)")
    long = "(|" + "".join(f"(uid=user{n:05d})" for n in range(250)) + ")"
    assert len(long) > lf.CACHED_LENGTH
    assert lf.parse(long) is not lf.parse(long)
    assert lf.parse(long) == lf.parse(long)


def test_lenient_forms_accepted() -> None:
    """Spaces between components, a bare item, RFC 1960 escapes and (&)/(|) are accepted."""
    assert lf.parse(" ( & (a=b) (c=d) ) ") == lf.And((lf.Equality("a", "b"), lf.Equality("c", "d")))
    assert lf.parse("uid=x") == lf.Equality("uid", "x")
    assert lf.parse("(cn=\\*\\(x\\))") == lf.Equality("cn", "*(x)")
    assert lf.parse("(&)") == lf.And(())
    assert lf.parse("(|)") == lf.Or(())


@pytest.mark.parametrize(
    ("text", "problem", "position"),
    [
        ("", "empty filter", 0),
        ("(a=b", "unbalanced", 0),
        ("(a=b))", "unexpected ')'", 5),
        ("(=b)", "attribute description", 1),
        ("(a=b\\zz)", "two hex digits", 4),
        ("(a=(b)", "unescaped '('", 3),
        ("(a=x\x00)", "unescaped", 4),
        ("(a>=x*)", "unescaped '*'", 4),
        ("(a:dn:=x)", "':dn'", 2),
        ("(:1.2:=x)", "without an attribute", 1),
        ("(a=x**y)", "empty substring", 3),
        ("(&(a=b)x)", "expected ')'", 7),
        ("(a!=b)", "expected '='", 2),
        ("(!" * 100 + "(a=b)" + ")" * 100, "nested deeper", 130),
    ],
)
def test_bad_filters_name_position_and_problem(text: str, problem: str, position: int) -> None:
    """A malformed filter raises InvalidFilterError naming what is wrong and where."""
    with pytest.raises(InvalidFilterError, match=re.escape(problem)) as caught:
        lf.parse(text)
    assert f"at position {position}" in str(caught.value)


ENTRY = Attributes(
    {
        "objectClass": ["top", "person"],
        "uid": ["User1"],
        "cn": ["John  Smith"],
        "uSNChanged": ["100"],
        "userAccountControl": ["514"],
        "groupType": ["-2147483646"],
        "objectGUID": [b"\x01\xff\x00A"],
        "whenChanged": ["20240101000000.0Z"],
        "entryUUID": ["6F1A2B3C-0000-4000-8000-000000000001"],
    }
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(UID=user1)", True),
        ("(uid=user2)", False),
        ("(cn=john smith)", True),
        ("(cn~=JOHN SMITH)", True),
        ("(cn=j*smi*)", True),
        ("(cn=*smith)", True),
        ("(cn=*smithx)", False),
        ("(cn=john*ohn*)", False),
        # spaces at a substring piece's ends, as slapd matches them (checked against slapd 2.5)
        ("(cn=*smith )", True),
        ("(cn= john*)", True),
        ("(cn=*john *)", True),
        ("(cn=*smith *)", False),
        ("(cn=* )", True),
        ("(cn= *)", False),
        # compatibility forms fold as slapd folds them (NFKC): full-width letters, a no-break space
        ("(cn=\\ef\\bc\\aa\\ef\\bd\\8fhn smith)", True),
        ("(cn=john\\c2\\a0smith)", True),
        ("(uSNChanged>=99)", True),
        ("(uSNChanged>=1000)", False),
        ("(uSNChanged<=100)", True),
        ("(uSNChanged<=99)", False),
        ("(userAccountControl:1.2.840.113556.1.4.803:=2)", True),
        ("(userAccountControl:1.2.840.113556.1.4.803:=3)", False),
        ("(userAccountControl:1.2.840.113556.1.4.804:=3)", True),
        ("(groupType:1.2.840.113556.1.4.803:=2147483648)", True),
        ("(objectGUID=\\01\\ff\\00A)", True),
        ("(objectGUID=\\01\\ff\\00a)", False),
        ("(objectGUID=\\01\\ff*)", True),
        ("(whenChanged>=20231231000000.0Z)", True),
        ("(whenChanged>=20240102000000.0Z)", False),
        ("(entryUUID=6f1a2b3c-0000-4000-8000-000000000001)", True),
        ("(!(mail=*))", True),
        ("(&(objectClass=person)(|(uid=nobody)(cn=*smith)))", True),
        ("(&(objectClass=person)(uid=nobody))", False),
        ("(cn:caseExactMatch:=John  Smith)", True),
        ("(cn:caseExactMatch:=john  smith)", False),
        ("(&)", True),
        ("(|)", False),
    ],
)
def test_evaluation_follows_ldap_matching_rules(text: str, expected: bool) -> None:
    """Filters evaluate with case-insensitive names and values, integer ordering, bitwise rules and raw binary."""
    assert lf.parse(text).matches(ENTRY) is expected


def test_unknown_matching_rule_parses_but_is_not_evaluable() -> None:
    """An unsupported matching rule can be sent to a real server but check_evaluable rejects it clearly."""
    node = lf.parse("(memberOf:1.2.840.113556.1.4.1941:=cn=g,dc=x)")
    assert isinstance(node, lf.Extensible)
    with pytest.raises(InvalidFilterError, match="not supported"):
        lf.check_evaluable(lf.And((lf.Present("cn"), node)))
    lf.check_evaluable(lf.parse("(a:1.2.840.113556.1.4.803:=1)"))


SMALL_TEXT = st.sampled_from(["a", "A", " a ", "b", "x y", "X  Y", "0x10", "16"])
ENTRIES = st.dictionaries(
    st.sampled_from(["cn", "uid", "mail", "objectClass"]),
    st.lists(st.one_of(SMALL_TEXT, st.binary(max_size=2)), min_size=1, max_size=3),
).map(Attributes)
CHILDREN = st.lists(
    st.one_of(
        st.builds(lf.Equality, NAMES, st.one_of(SMALL_TEXT, st.binary(max_size=2))),
        st.builds(lf.Approx, NAMES, SMALL_TEXT),
        _items(),
    ),
    max_size=12,
)


@given(CHILDREN, ENTRIES)
def test_an_or_matches_when_any_child_matches(children: list[lf.Filter], entry: Attributes) -> None:
    """An OR evaluates its equality children as one set of keys per attribute: still exactly "any child"."""
    assert lf.Or(tuple(children)).matches(entry) is any(child.matches(entry) for child in children)


def test_an_or_of_many_equalities_keeps_its_other_children() -> None:
    """A batch of reference lookups, (|(uid=u0)…(uid=u249)) and one more item, matches by any of them."""
    node = lf.parse("(|" + "".join(f"(uid=U{n})" for n in range(250)) + "(cn=*smith))")
    assert node.matches(Attributes({"uid": ["u249"]}))
    assert node.matches(Attributes({"uid": ["nobody"], "cn": ["John Smith"]}))
    assert not node.matches(Attributes({"uid": ["u250"]}))
