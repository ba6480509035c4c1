"""The SCIM filter and PATCH path parser: grammar, precedence, errors, limits, round-trip, differential."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ScimError
from protocol.scimfilter import (
    MAX_DEPTH,
    MAX_LENGTH,
    And,
    AttrPath,
    Compare,
    Filter,
    Not,
    Or,
    PatchPath,
    Present,
    ValuePath,
    _parse_filter,
    parse_filter,
    parse_path,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"

# RFC 7644 §3.4.2.2 filter examples, verbatim.
RFC_EXAMPLES = [
    'userName eq "bjensen"',
    'name.familyName co "O\'Malley"',
    'userName sw "J"',
    'urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"',
    "title pr",
    'meta.lastModified gt "2011-05-13T04:42:34Z"',
    'meta.lastModified ge "2011-05-13T04:42:34Z"',
    'meta.lastModified lt "2011-05-13T04:42:34Z"',
    'meta.lastModified le "2011-05-13T04:42:34Z"',
    'title pr and userType eq "Employee"',
    'title pr or userType eq "Intern"',
    'schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"',
    'userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")',
    'userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")',
    'userType eq "Employee" and (emails.type eq "work")',
    'userType eq "Employee" and emails[type eq "work" and value co "@example.com"]',
    'emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]',
]

# Both parsers agree on these.
VALID_AGREED = [
    *RFC_EXAMPLES,
    'userName Eq "x" AND title PR',
    "NOT (title pr)",
    "not(title pr)",
    "((title pr))",
    'userName eq"x"',
    'userName  eq   "x"',
    "active eq true",
    "active eq false",
    "nickName eq null",
    "meta.version eq 1",
    'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984"',
    'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915"',
    'members[$ref eq "https://example.com/Users/1"]',
    'a eq "\\u00e9\\\\"',
    'emails[not (type eq "work")]',
    'emails[(type eq "work" or type eq "home") and primary eq true]',
]
INVALID_AGREED = [
    "",
    "   ",
    "userName",
    "userName eq",
    "userName eq bjensen",
    "userName eq 'bjensen'",
    'userName regex "x"',
    "not title pr",
    "()",
    "(title pr",
    "title pr)",
    "title pr and",
    "and title pr",
    "title pr or or x pr",
    "emails[]",
    'emails[type eq "work"',
    'emails type eq "work"]',
    'name.givenName.x eq "a"',
    "a:b pr",
    "active eq True",
    "active eq NULL",
    '"x" eq userName',
    "1 eq userName",
    "userName eq 1 2",
    'userName eq "a" "b"',
]
# Where scim2_filter_parser 0.7 departs from RFC 7644; we follow the RFC (or, for the last group,
# a documented reading): (text, we accept, why).
DISAGREEMENTS = [
    ("meta.version gt 10", True, "compValue numbers are JSON numbers; the reference lexes single digits"),
    ("meta.version gt -1", True, "JSON numbers may be negative"),
    ("meta.version gt 1.5e3", True, "JSON numbers may have fractions and exponents"),
    ('userName eq "a\\"b"', True, "compValue strings are JSON strings, escaped quotes included"),
    ('emails[type eq "work"].value eq "x"', False, "FILTER has no valuePath subAttr; that form is a PATCH path"),
    ('members[value eq "6784"] eq ""', False, "a valuePath is not an attrPath in attrExp"),
    ("emails[type[value pr]]", False, "valFilter has no valuePath: value filters do not nest"),
    ('userName eq "a\nb"', False, "JSON strings cannot hold unescaped control characters"),
    ("a$b pr", False, "ATTRNAME is ALPHA *(nameChar); we allow only a leading '$' (for '$ref')"),
    ("pr pr", True, "'pr' is a valid ATTRNAME; keywords are recognised by position"),
]


def reference_accepts(text: str) -> bool:
    """Whether scim2_filter_parser's lexer and parser accept ``text``."""
    from scim2_filter_parser.lexer import SCIMLexer
    from scim2_filter_parser.parser import SCIMParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return SCIMParser().parse(SCIMLexer().tokenize(text)) is not None
        except Exception:
            return False


def accepts(text: str) -> bool:
    """Whether our parser accepts ``text``; a refusal must be invalidFilter."""
    scim_type = None
    try:
        parse_filter(text)
    except ScimError as error:
        scim_type = error.scim_type
    assert scim_type in (None, "invalidFilter")
    return scim_type is None


def attr(name: str, sub: str | None = None, uri: str | None = None) -> AttrPath:
    return AttrPath(name, sub, uri)


# ------------------------------------------------------------------------------------- structure


def test_rfc_examples_parse_and_round_trip() -> None:
    """Every filter example of RFC 7644 §3.4.2.2 parses, and its printed form parses to the same AST."""
    for text in RFC_EXAMPLES:
        node = parse_filter(text)
        assert parse_filter(node.to_string()) == node, text


def test_simple_comparison_ast() -> None:
    """``userName eq "bjensen"`` is one Compare with the attribute, operator and decoded value."""
    assert parse_filter('userName eq "bjensen"') == Compare(attr("userName"), "eq", "bjensen")


def test_precedence_not_over_and_over_or() -> None:
    """``a or b and not (c)`` groups as ``a or (b and (not c))`` (RFC 7644 order of operations)."""
    a, b, c = Present(attr("a")), Present(attr("b")), Present(attr("c"))
    assert parse_filter("a pr or b pr and not (c pr)") == Or((a, And((b, Not(c)))))
    assert parse_filter("a pr and b pr or c pr") == Or((And((a, b)), c))


def test_chains_are_nary_and_parentheses_keep_nesting() -> None:
    """``a and b and c`` is one And of three; ``(a and b) and c`` keeps the group the text wrote."""
    a, b, c = Present(attr("a")), Present(attr("b")), Present(attr("c"))
    assert parse_filter("a pr and b pr and c pr") == And((a, b, c))
    assert parse_filter("(a pr and b pr) and c pr") == And((And((a, b)), c))
    assert parse_filter("(a pr or b pr) and c pr").to_string() == "(a pr or b pr) and c pr"


def test_keywords_are_case_insensitive() -> None:
    """Operators and logical keywords match in any case and print in lowercase."""
    node = parse_filter('userName EQ "x" AnD NoT (title Pr)')
    assert node == And((Compare(attr("userName"), "eq", "x"), Not(Present(attr("title")))))


def test_urn_qualified_paths() -> None:
    """A schema URN prefix splits at the last colon, so ``…:2.0:User:manager.value`` keeps its dots."""
    node = parse_filter(f'{ENTERPRISE}:manager.value eq "26118915"')
    assert node == Compare(attr("manager", "value", ENTERPRISE), "eq", "26118915")
    assert parse_filter(f'{CORE_USER}:userName sw "J"') == Compare(attr("userName", None, CORE_USER), "sw", "J")


def test_value_path_filter() -> None:
    """``emails[type eq "work" and value co "@x"]`` is a ValuePath over sub-attributes."""
    node = parse_filter('emails[type eq "work" and value co "@x"]')
    inner = And((Compare(attr("type"), "eq", "work"), Compare(attr("value"), "co", "@x")))
    assert node == ValuePath(attr("emails"), inner)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("x eq true", True),
        ("x eq false", False),
        ("x eq null", None),
        ("x eq 42", 42),
        ("x eq -7", -7),
        ("x eq 1.25", 1.25),
        ("x eq 2E3", 2000.0),
        ('x eq "\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"', '"\\/\b\f\n\r\té\U0001f600'),
    ],
)
def test_comparison_values_are_json(text: str, value: object) -> None:
    """Comparison values decode as JSON: literals, integers, floats and strings with every escape."""
    node = parse_filter(text)
    assert isinstance(node, Compare)
    assert node.value == value
    assert type(node.value) is type(value)


def test_keywords_may_be_attribute_names() -> None:
    """A word is a keyword only where the grammar expects one, so ``and eq 1 and not pr`` parses."""
    node = parse_filter("and eq 1 and not pr")
    assert node == And((Compare(attr("and"), "eq", 1), Present(attr("not"))))


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "offset", "expected"),
    [
        ("userName", 8, "comparison operator"),
        ("userName eq", 11, "comparison value"),
        ("userName eq bjensen", 12, "comparison value"),
        ("userName eq 'x'", 12, "double quotes"),
        ('userName eq "x', 12, "unterminated string"),
        ('a eq "\\q"', 5, "invalid escape"),
        ("not a pr", 4, "'(' after 'not'"),
        ("(a pr", 5, "')'"),
        ("a pr )", 5, "end of filter"),
        ("a[b[c pr]]", 3, "cannot nest"),
        ('a[b eq "x"].c eq 1', 11, "PATCH paths"),
        ("a eq True", 5, "lowercase"),
        ("a:b pr", 0, "schema URI"),
        ("a.b.c pr", 0, "attribute path"),
        ("a pr and", 8, "attribute path"),
        ("a eq %", 5, "unexpected character"),
    ],
)
def test_errors_name_offset_and_expectation(text: str, offset: int, expected: str) -> None:
    """A bad filter raises invalidFilter whose detail names the character offset and what was expected."""
    with pytest.raises(ScimError) as caught:
        parse_filter(text)
    assert caught.value.scim_type == "invalidFilter"
    assert caught.value.status == 400
    assert f"at offset {offset}:" in caught.value.detail
    assert expected in caught.value.detail


def test_nesting_limit_is_a_scim_error() -> None:
    """Parentheses, ``not (`` and brackets nested beyond MAX_DEPTH are refused with invalidFilter."""
    parse_filter("(" * MAX_DEPTH + "a pr" + ")" * MAX_DEPTH)
    for opener in ("(", "not ("):
        with pytest.raises(ScimError, match="nesting deeper"):
            parse_filter(opener * (MAX_DEPTH + 1) + "a pr" + ")" * (MAX_DEPTH + 1))


def test_hostile_depth_never_raises_recursion_error() -> None:
    """Thousands of open parentheses (within the length limit) raise invalidFilter, never RecursionError."""
    with pytest.raises(ScimError) as caught:
        parse_filter("(" * (MAX_LENGTH - 10) + "a pr")
    assert caught.value.scim_type == "invalidFilter"


def test_long_chains_are_not_recursion() -> None:
    """A thousand ``or`` terms parse (chains are iterative) and print back without recursion trouble."""
    text = " or ".join("a pr" for _ in range(1000))
    node = parse_filter(text)
    assert isinstance(node, Or)
    assert len(node.operands) == 1000
    assert node.to_string() == text


def test_length_limit() -> None:
    """A filter longer than MAX_LENGTH is refused up front with invalidFilter."""
    with pytest.raises(ScimError, match="limit"):
        parse_filter('userName eq "' + "x" * MAX_LENGTH + '"')


def test_huge_numbers_are_scim_errors() -> None:
    """Numbers too long for int() or out of float range raise invalidFilter, not ValueError."""
    for text in ("x eq " + "9" * 5000, "x eq 1e999"):
        with pytest.raises(ScimError) as caught:
            parse_filter(text)
        assert caught.value.scim_type == "invalidFilter"


def test_parse_is_cached() -> None:
    """Parsing the same text twice returns the same (immutable) AST object from the LRU cache."""
    assert parse_filter('userName eq "cached"') is parse_filter('userName eq "cached"')


# ----------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("members", PatchPath(attr("members"))),
        ("name.familyName", PatchPath(attr("name", "familyName"))),
        ('addresses[type eq "work"]', PatchPath(attr("addresses"), Compare(attr("type"), "eq", "work"))),
        (
            'members[value eq "2819c223-7f76-453a-919d-413861904646"].displayName',
            PatchPath(
                attr("members"), Compare(attr("value"), "eq", "2819c223-7f76-453a-919d-413861904646"), "displayName"
            ),
        ),
        (f"{ENTERPRISE}:manager", PatchPath(attr("manager", None, ENTERPRISE))),
        (ENTERPRISE, PatchPath(attr("User", None, "urn:ietf:params:scim:schemas:extension:enterprise:2.0"))),
    ],
)
def test_patch_paths(text: str, expected: PatchPath) -> None:
    """The RFC 7644 §3.5.2 path forms parse to PatchPath and print back to the same text."""
    assert parse_path(text) == expected
    assert parse_path(expected.to_string()) == expected


@pytest.mark.parametrize(
    "text",
    ["", "a b", "[x pr]", "a.b[c pr]", "a[c pr].", "a[c pr].b.c", "a[c pr] x", "a[b[c pr]]", 'a[x eq "y"'],
)
def test_bad_patch_paths_are_invalid_path(text: str) -> None:
    """Malformed PATCH paths raise invalidPath (not invalidFilter), naming where they went wrong."""
    with pytest.raises(ScimError) as caught:
        parse_path(text)
    assert caught.value.scim_type == "invalidPath"


# ------------------------------------------------------------------------------------ properties

names = st.from_regex(r"\$?[A-Za-z][A-Za-z0-9_-]{0,6}", fullmatch=True)
uris = st.sampled_from([None, CORE_USER, ENTERPRISE, "urn:example:ext:1.0"])
attr_paths = st.builds(AttrPath, names, st.none() | names, uris)
scim_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
ops = st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"])
leaves = st.builds(Compare, attr_paths, ops, scim_values) | st.builds(Present, attr_paths)


def _trees(inner: st.SearchStrategy[Filter]) -> st.SearchStrategy[Filter]:
    operands = st.lists(inner, min_size=2, max_size=4).map(tuple)
    return st.one_of(st.builds(Not, inner), st.builds(And, operands), st.builds(Or, operands))


sub_filters: st.SearchStrategy[Filter] = st.recursive(leaves, _trees, max_leaves=6)
filters: st.SearchStrategy[Filter] = st.recursive(
    leaves | st.builds(ValuePath, attr_paths, sub_filters), _trees, max_leaves=12
)


@settings(max_examples=400)
@given(filters)
def test_round_trip_property(node: Filter) -> None:
    """For any AST, parse(to_string(ast)) == ast (printing never changes structure)."""
    assert parse_filter(node.to_string()) == node


@settings(max_examples=400)
@given(st.text(max_size=200), attr_paths)
def test_arbitrary_strings_survive_and_do_not_change_structure(value: str, path: AttrPath) -> None:
    """Any string as a comparison value comes back unchanged and cannot inject operators or brackets."""
    node = And((Compare(path, "eq", value), Present(AttrPath("title"))))
    parsed = parse_filter(node.to_string())
    assert parsed == node
    assert isinstance(parsed, And)
    first = parsed.operands[0]
    assert isinstance(first, Compare)
    assert first.value == value


def _outcome(parse: object, text: str) -> object:
    try:
        return parse(text)  # type: ignore[operator]
    except ScimError as error:
        return ("error", error.scim_type, error.detail)


# Texts shaped like the one-comparison filter parse_filter reads with a regular expression, and near misses
# (URNs, escapes, control characters, sub-sub-attributes, 'pr', keywords, no or odd white space).
_names = st.from_regex(r"\$?[A-Za-z][A-Za-z0-9_-]{0,6}", fullmatch=True) | st.sampled_from(
    ["not", "and", "or", "pr", "a.b.c", "urn:x:y:name", "a+b", "1a", "na$me", "ünï"]
)
_blanks = st.sampled_from(["", " ", "  ", "\t", "\n ", "\r\n", "\x0b", "\u3000"])
_operators = st.sampled_from(["eq", "EQ", "Ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "eqx", "e", "xx"])
_bodies = st.text(max_size=12) | st.sampled_from(['\\"', "\\u0041", "\\x", "a\\nb", "\x01", "\x7f"])


@settings(max_examples=1500)
@given(_blanks, _names, st.none() | _names, _blanks, _operators, _blanks, _bodies, st.sampled_from(['"', ""]), _blanks)
def test_simple_comparisons_read_as_the_parser_reads_them(
    lead: str, name: str, sub: str | None, gap: str, op: str, gap2: str, body: str, close: str, tail: str
) -> None:
    """The shortcut for ``name[.sub] op "text"`` gives the parser's AST, or its error, for any such text."""
    path = f"{name}.{sub}" if sub is not None else name
    text = f'{lead}{path}{gap}{op}{gap2}"{body}{close}{tail}'
    parse_filter.cache_clear()
    assert _outcome(parse_filter, text) == _outcome(_parse_filter, text)


def test_the_shortcut_reads_the_common_lookup() -> None:
    """The common lookup keeps its AST; a string with an escape, or a URN, goes through the parser alike."""
    assert parse_filter('  userName  EQ "bjensen"\t') == Compare(AttrPath("userName"), "eq", "bjensen")
    assert parse_filter('emails.value co "@example.com"') == Compare(AttrPath("emails", "value"), "co", "@example.com")
    assert parse_filter('userName eq "a\\"b"') == Compare(AttrPath("userName"), "eq", 'a"b')
    assert parse_filter(f'{CORE_USER}:userName eq "x"') == Compare(AttrPath("userName", uri=CORE_USER), "eq", "x")


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_garbage_raises_only_scim_errors(text: str) -> None:
    """Arbitrary text either parses or raises invalidFilter; no other exception escapes."""
    assert accepts(text) in (True, False)


@settings(max_examples=200)
@given(filters)
def test_value_path_prints_as_patch_path(node: Filter) -> None:
    """A ValuePath's printed form is also a PATCH path with the same attribute and filter."""
    if isinstance(node, ValuePath) and node.attr.sub_attr is None:
        path = parse_path(node.to_string())
        assert (path.attr, path.filter) == (node.attr, node.filter)


# ---------------------------------------------------------------------------------- differential


@pytest.mark.parametrize("text", VALID_AGREED + INVALID_AGREED)
def test_differential_against_scim2_filter_parser(text: str) -> None:
    """On the agreed corpus we accept exactly what scim2_filter_parser accepts."""
    assert accepts(text) == reference_accepts(text), text


@pytest.mark.parametrize(("text", "ours", "why"), DISAGREEMENTS)
def test_documented_disagreements(text: str, ours: bool, why: str) -> None:
    """Where scim2_filter_parser departs from RFC 7644 we follow the RFC, and the departure is real."""
    assert accepts(text) == ours, why
    assert reference_accepts(text) != ours, f"no longer a disagreement: {why}"


def test_corpus_validity_is_as_declared() -> None:
    """The agreed corpus is what it claims: the valid half parses, the invalid half does not."""
    assert all(accepts(t) for t in VALID_AGREED)
    assert not any(accepts(t) for t in INVALID_AGREED)
