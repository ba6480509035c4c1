"""Evaluating SCIM filters on SCIM resources: case rules, multi-valued, complex, pr, ordering, URNs."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import scimeval
from protocol.errors import ScimError
from protocol.scimeval import Evaluator, check, fold_case, holds, matches, parse_datetime, predicate
from protocol.scimfilter import And, AttrPath, Compare, Not, Or, parse_filter

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

USER: dict[str, Any] = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
    "id": "2819c223-7f76-453a-919d-413861904646",
    "externalId": "BJensen-Ext",
    "userName": "BJensen",
    "name": {"givenName": "Barbara", "familyName": "O'Malley", "middleName": ""},
    "title": "",
    "userType": "Employee",
    "active": True,
    "loginCount": 42,
    "emails": [
        {"value": "bjensen@example.com", "type": "work", "primary": True},
        {"value": "babs@jensen.org", "type": "home"},
    ],
    "phoneNumbers": [],
    "x509Certificates": [{}],
    "meta": {"resourceType": "User", "lastModified": "2011-05-13T04:42:34Z", "version": 'W/"a330bc54"'},
    ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}},
}


def ok(text: str, resource: dict[str, Any] = USER) -> bool:
    return matches(parse_filter(text), resource)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('userName eq "bjensen"', True),
        ('USERNAME eq "BJENSEN"', True),
        ('userName eq "bjensen2"', False),
        ('name.familyName co "o\'mal"', True),
        ('userName sw "bj"', True),
        ('userName ew "SEN"', True),
        ('id eq "2819C223-7F76-453A-919D-413861904646"', False),
        ('id eq "2819c223-7f76-453a-919d-413861904646"', True),
        ('externalId eq "bjensen-ext"', False),
        ('meta.resourceType eq "user"', False),
    ],
)
def test_string_case_rules(text: str, expected: bool) -> None:
    """Names and ordinary strings are case-insensitive; id, externalId and meta.resourceType are caseExact."""
    assert ok(text) is expected


def test_case_exact_set_is_a_parameter() -> None:
    """A custom caseExact set (URN-qualified core names normalised) replaces the default."""
    node = parse_filter('userName eq "bjensen"')
    assert not matches(node, USER, case_exact={"urn:ietf:params:scim:schemas:core:2.0:User:userName"})
    assert matches(parse_filter('id eq "2819C223-7F76-453A-919D-413861904646"'), USER, case_exact=())
    evaluator = Evaluator({"emails.value"})
    assert not evaluator.matches(parse_filter('emails[value eq "BJENSEN@example.com"]'), USER)
    assert Evaluator().matches(parse_filter('emails[value eq "BJENSEN@example.com"]'), USER)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('emails.value co "jensen.org"', True),
        ('emails co "example.com"', True),
        ('emails.type eq "home"', True),
        ('emails[type eq "work" and value co "@example.com"]', True),
        ('emails[type eq "home" and value co "@example.com"]', False),
        ('emails.type eq "home" and emails.value co "@example.com"', True),
        ("emails[primary eq true]", True),
        ('emails[not (type eq "work")]', True),
        ('emails ne "bjensen@example.com"', False),
        ('emails ne "nobody@example.com"', True),
    ],
)
def test_multi_valued_and_complex(text: str, expected: bool) -> None:
    """Any value may match; ``[…]`` must hold for one value; complex values compare by ``value``; ne is none-equal."""
    assert ok(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("userName pr", True),
        ("title pr", False),
        ("name.middleName pr", False),
        ("phoneNumbers pr", False),
        ("x509Certificates pr", False),
        ("nickName pr", False),
        ("emails pr", True),
        ("name pr", True),
        ("active pr", True),
        ("nickName eq null", True),
        ("title eq null", True),
        ("userName eq null", False),
        ("userName ne null", True),
    ],
)
def test_presence(text: str, expected: bool) -> None:
    """null, "", [], {} (and lists/objects of them) are not present; ``eq null`` means not present."""
    assert ok(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('meta.lastModified gt "2011-05-13T04:42:33Z"', True),
        ('meta.lastModified gt "2011-05-13T04:42:34Z"', False),
        ('meta.lastModified ge "2011-05-13T04:42:34Z"', True),
        ('meta.lastModified eq "2011-05-13T06:42:34.000+02:00"', True),
        ('meta.lastModified lt "2011-05-13T06:42:35+02:00"', True),
        ("loginCount gt 41", True),
        ("loginCount ge 42.0", True),
        ("loginCount lt 42", False),
        ("loginCount eq 42", True),
        ('loginCount eq "42"', False),
        ('userName gt "bj"', True),
        ('userName lt "BK"', True),
        ('userType le "employee"', True),
        ("active eq true", True),
        ("active eq false", False),
        ("active ne false", True),
        ('active eq "true"', False),
    ],
)
def test_ordering_and_types(text: str, expected: bool) -> None:
    """Date-times order chronologically, numbers numerically, strings lexically without case; no coercion."""
    assert ok(text) is expected


@pytest.mark.parametrize(
    "text",
    ["active gt true", "loginCount lt null", 'active ge "a"', "userName co 1", "userName sw true", "title ew null"],
)
def test_inapplicable_operators_are_invalid_filter(text: str) -> None:
    """Ordering booleans or null, and co/sw/ew with a non-string, raise invalidFilter (RFC 7644 Table 3)."""
    with pytest.raises(ScimError) as caught:
        ok(text)
    assert caught.value.scim_type == "invalidFilter"


def test_static_check_does_not_depend_on_data() -> None:
    """An impossible operator raises even if short-circuiting would never reach it."""
    with pytest.raises(ScimError):
        ok("userName pr or active gt true")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'{ENTERPRISE}:employeeNumber eq "701984"', True),
        (f'{ENTERPRISE.upper()}:EMPLOYEENUMBER eq "701984"', True),
        (f'{ENTERPRISE}:manager.value sw "26118915"', True),
        (f'{ENTERPRISE}:manager eq "26118915-6090-4610-87e4-49d8ca9f808d"', True),
        (f"{ENTERPRISE} pr", True),
        ('employeeNumber eq "701984"', False),
        ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen"', True),
        ('urn:example:other:1.0:Thing:userName eq "bjensen"', False),
        (f'schemas eq "{ENTERPRISE}"', True),
    ],
)
def test_schema_urns(text: str, expected: bool) -> None:
    """Extension attributes resolve through their URN container; the core URN prefix means top level."""
    assert ok(text) is expected


def test_rfc_examples_evaluate() -> None:
    """The RFC 7644 compound examples evaluate as their logic says on a sample user."""
    assert ok('userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")')
    assert not ok('userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")')
    assert ok('userType eq "Employee" and emails[type eq "work" and value co "@example.com"]')
    assert ok('title pr or userType eq "Intern"') is False


def test_select_and_element() -> None:
    """select keeps order and filters; matches_element evaluates one value with its parent's caseExact rules."""
    users = [{"userName": "a", "active": True}, {"userName": "b", "active": False}, {"userName": "c", "active": True}]
    assert [u["userName"] for u in Evaluator().select(parse_filter("active eq true"), users)] == ["a", "c"]
    evaluator = Evaluator({"members.value"})
    assert not evaluator.matches_element(parse_filter('value eq "ABC"'), {"value": "abc"}, "members")
    assert evaluator.matches_element(parse_filter('value eq "abc"'), {"value": "abc"}, "Members")


def test_resource_is_not_mutated() -> None:
    """Evaluation only reads the resource."""
    resource = {"emails": [{"value": "x@y"}], "name": {"givenName": "x"}}
    snapshot = repr(resource)
    ok('emails[value eq "x@y"] and name.givenName pr and nope eq null', resource)
    assert repr(resource) == snapshot


def test_parse_datetime() -> None:
    """RFC 3339 date-times parse to aware datetimes (naive is UTC; long fractions truncate); others are None."""
    assert parse_datetime("2011-05-13T04:42:34.1234567Z") == parse_datetime("2011-05-13T04:42:34.123456+00:00")
    assert parse_datetime("2011-05-13T04:42:34") == parse_datetime("2011-05-13T04:42:34Z")
    assert parse_datetime("2011-13-13T04:42:34Z") is None
    assert parse_datetime("bjensen") is None


# ------------------------------------------------------------------------------------ properties

plain = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.booleans(), st.none())
resources = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    plain | st.lists(plain, max_size=3) | st.dictionaries(st.sampled_from(["value", "type"]), plain, max_size=2),
    max_size=3,
)
eq_leaves = st.builds(
    Compare, st.builds(AttrPath, st.sampled_from(["a", "b", "c", "A"])), st.sampled_from(["eq", "ne"]), plain
)


@settings(max_examples=300)
@given(resources, eq_leaves, eq_leaves)
def test_boolean_algebra(resource: dict[str, Any], left: Compare, right: Compare) -> None:
    """not/and/or follow Boolean logic, and ``x ne v`` is exactly ``not (x eq v)``."""
    evaluator = Evaluator()
    l_ok, r_ok = evaluator.matches(left, resource), evaluator.matches(right, resource)
    assert evaluator.matches(And((left, right)), resource) == (l_ok and r_ok)
    assert evaluator.matches(Or((left, right)), resource) == (l_ok or r_ok)
    assert evaluator.matches(Not(left), resource) == (not l_ok)
    flipped = Compare(left.attr, "ne" if left.op == "eq" else "eq", left.value)
    assert evaluator.matches(flipped, resource) == (not l_ok)


@settings(max_examples=200)
@given(st.text(max_size=12), st.text(max_size=12))
def test_string_operators_agree_with_python(actual: str, wanted: str) -> None:
    """co/sw/ew/eq on non-caseExact strings are Python's substring tests on case-folded text."""
    resource = {"s": actual}
    a, w = fold_case(actual), fold_case(wanted)
    for op, expected in (("co", w in a), ("sw", a.startswith(w)), ("ew", a.endswith(w))):
        assert matches(Compare(AttrPath("s"), op, wanted), resource) == expected
    if parse_datetime(actual) is None or parse_datetime(wanted) is None:
        assert matches(Compare(AttrPath("s"), "eq", wanted), resource) == (a == w)


_NAMES = ("userName", "USERNAME", "id", "emails", "active")
_STRINGS = st.sampled_from(["", "a", "A", "ab", "Straße", "SS", "2024-01-31T12:00:00Z", "2024-01-31T13:00:00+01:00"])
_SCALARS = st.one_of(_STRINGS, st.booleans(), st.integers(-1, 1), st.none())
_VALUES = st.one_of(
    _STRINGS,
    _SCALARS,
    st.fixed_dictionaries({"value": _SCALARS}),
    st.lists(st.one_of(_STRINGS, _SCALARS, st.fixed_dictionaries({"value": _SCALARS}), st.lists(_STRINGS, max_size=1))),
)
_RESOURCES = st.dictionaries(st.sampled_from(_NAMES), _VALUES, min_size=2, max_size=5)
_COMPARES = st.builds(
    Compare,
    st.builds(AttrPath, st.sampled_from(_NAMES), st.sampled_from([None, None, None, "value"])),
    st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt"]),
    st.one_of(_STRINGS, _STRINGS, st.booleans(), st.integers(-1, 1)),
)
_FILTERS = st.recursive(
    _COMPARES,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(lambda ops: And(tuple(ops)), st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda ops: Or(tuple(ops)), st.lists(inner, min_size=2, max_size=3)),
    ),
    max_leaves=4,
)


def _outcome(decide: Any) -> Any:
    try:
        return decide()
    except ScimError as error:
        return ("error", error.status)


@given(_FILTERS, _RESOURCES)
@settings(max_examples=1000)
def test_a_prepared_predicate_answers_as_holds(filter_: Any, resource: dict[str, Any]) -> None:
    """predicate(filter) decides (or refuses) every resource exactly as holds(filter, resource) does."""
    check_passed = _outcome(lambda: check(filter_)) is None
    if not check_passed:
        return
    assert _outcome(lambda: predicate(filter_)(resource)) == _outcome(lambda: holds(filter_, resource))


def test_a_plain_string_comparison_is_case_folded_once() -> None:
    """userName eq "ÉMILE" holds for "émile", id eq stays case-exact, and a date-time operand still
    compares chronologically."""
    assert predicate(parse_filter('userName eq "ÉMILE"'))({"username": "émile"})
    assert not predicate(parse_filter('id eq "ABC"'))({"id": "abc"})
    assert predicate(parse_filter('title eq "2024-01-31T12:00:00Z"'))({"title": "2024-01-31T13:00:00+01:00"})
    assert predicate(parse_filter('emails ne "a@x"'))({"emails": [{"value": "b@x"}]})


def test_fold_case_lowers_letters_of_one_to_one_pairs_only() -> None:
    """Letters of one-to-one case pairs fold (ASCII, Latin-1, Greek, Cyrillic, full-width); letters str.casefold
    would equate with something else, or fold to several letters, stay: directories tell them apart."""
    assert fold_case("ÉmILE Ørsted ΣΟΦΊΑ ЖАННА \uff21") == "émile ørsted σοφία жанна \uff41"
    # long s, ß, Kelvin, ohm, final sigma, dotted and dotless i, micro, capital ß, ǅ, a Georgian Mtavruli letter
    kept = "\u017f\u00df\u212a\u2126\u03c2\u0130\u0131\u00b5\u1e9e\u01c5\u1c90"
    assert fold_case(kept) == kept
    assert fold_case("\u0218") == "\u0218"  # Ș: Samba AD's case table does not fold it
    assert not matches(parse_filter('userName co "s"'), {"userName": "Gro\u00dfe"})  # Große holds no s
    assert not matches(parse_filter('userName eq "STRASSE"'), {"userName": "stra\u00dfe"})
    assert matches(parse_filter('userName eq "STRAẞE"'), {"userName": "STRAẞE"})


@given(st.text(max_size=12))
def test_fold_case_keeps_length_and_is_idempotent(text: str) -> None:
    """One character folds to one (so a folded substring is a substring of the folded text), folding twice
    is folding once, and ASCII text folds as str.lower does."""
    folded = fold_case(text)
    assert len(folded) == len(text)
    assert fold_case(folded) == folded
    ascii_only = text.encode("ascii", "ignore").decode()
    assert fold_case(ascii_only) == ascii_only.lower()


def test_text_predicates_are_freed_without_the_cyclic_collector() -> None:
    """A lister makes a predicate per lookup (a new value each time): none may wait for the garbage collector."""
    made = scimeval.text_predicates("userName", "eq")
    gc.collect()
    gc.disable()
    try:
        for index in range(100):
            for test in (made(f"user{index}"), predicate(parse_filter(f'title co "x{index}"'))):
                assert not test({"userName": "someone", "title": "nothing"})
        assert gc.collect() == 0
    finally:
        gc.enable()
