"""Attribute-mapping expressions: syntax, every function, null semantics, errors with positions, bounds."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.provisioning.expressions import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_REGEX_SUBJECT,
    MAX_STRING,
    Call,
    ExpressionError,
    ExpressionEvaluationError,
    describe_functions,
    parse_expression,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LDAP_ENTRY = "urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry"

USER: dict[str, Any] = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, LDAP_ENTRY],
    "id": "8c1f2a9e-0b7d-4d6e-9a51-3f0c2b7e4d11",
    "userName": "zoe.lefevre@example.com",
    "name": {"givenName": "Zoë", "familyName": "Lefèvre", "formatted": "Zoë Lefèvre"},
    "displayName": "Zoë Lefèvre",
    "active": True,
    "emails": [
        {"value": "zoe.lefevre@example.com", "type": "work", "primary": True},
        {"value": "zoe@home.example", "type": "home"},
    ],
    "phoneNumbers": [{"value": "+33 1 23 45 67 89", "type": "work"}],
    "proxyAddresses": ["smtp:a@example.com", "SMTP:b@example.com", "smtp:a@example.com"],
    ENTERPRISE: {"department": "Sales", "employeeNumber": "0042", "manager": {"value": "m-1"}},
    LDAP_ENTRY: {"distinguishedName": "uid=zoe,ou=People\\, Paris,dc=example,dc=com"},
    "meta": {"resourceType": "User"},
}


def ev(text: str, resource: dict[str, Any] = USER) -> Any:
    return parse_expression(text).evaluate(resource)


def error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    return info.value


# ------------------------------------------------------------------------------------------ syntax


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"plain"', "plain"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"\d+"', "\\d+"),
        ('"[not a ref]"', "[not a ref]"),
        ("42", 42),
        ("-7", -7),
        ("2.5", 2.5),
        ("true", True),
        ("FALSE", False),
        ("null", None),
        ("  \t[userName]\n ", "zoe.lefevre@example.com"),
    ],
)
def test_literals(text: str, expected: Any) -> None:
    """Strings (\\" and \\\\ escapes, other backslashes kept), numbers, booleans and null are themselves."""
    assert ev(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[userName]", "zoe.lefevre@example.com"),
        ("[USERNAME]", "zoe.lefevre@example.com"),
        ("[name.givenName]", "Zoë"),
        ('[emails[type eq "work"].value]', "zoe.lefevre@example.com"),
        ('[emails[type eq "WORK" and primary eq true].value]', "zoe.lefevre@example.com"),
        ("[emails.value]", ["zoe.lefevre@example.com", "zoe@home.example"]),
        (f"[{ENTERPRISE}:department]", "Sales"),
        (f"[{ENTERPRISE}:manager.value]", "m-1"),
        (f"[{ENTERPRISE}:manager]", {"value": "m-1"}),
        (f"[{LDAP_ENTRY}:distinguishedName]", "uid=zoe,ou=People\\, Paris,dc=example,dc=com"),
        ("[urn:ietf:params:scim:schemas:core:2.0:User:userName]", "zoe.lefevre@example.com"),
        ("[active]", True),
        ("[nickName]", None),
        ('[emails[type eq "other"].value]', None),
        ("[name.middleName]", None),
    ],
)
def test_attribute_references(text: str, expected: Any) -> None:
    """A reference is a SCIM path on the source: null when absent, the value, or a list of several values."""
    assert ev(text) == expected


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("givenName", "Zoë"),
        ("sn", "Lefèvre"),
        ("cn", "Zoë Lefèvre"),
        ("mail", "zoe.lefevre@example.com"),
        ("telephoneNumber", "+33 1 23 45 67 89"),
        ("department", "Sales"),
        ("employeeId", "0042"),
        ("manager", "m-1"),
        ("distinguishedName", "uid=zoe,ou=People\\, Paris,dc=example,dc=com"),
        ("objectGUID", "8c1f2a9e-0b7d-4d6e-9a51-3f0c2b7e4d11"),
        ("userPrincipalName", "zoe.lefevre@example.com"),
    ],
)
def test_incumbent_aliases(alias: str, expected: str) -> None:
    """The incumbent's directory attribute names resolve to the SCIM attribute the agent serves them as."""
    assert ev(f"[{alias}]") == expected


def test_omitted_arguments_are_null() -> None:
    """An argument left out between commas is null, as in the incumbent's syntax."""
    call = parse_expression('Coalesce(, [nickName], , "x")').root
    assert isinstance(call, Call)
    assert len(call.args) == 4
    assert ev('Coalesce(, [nickName], , "x")') == "x"


def test_function_names_are_case_insensitive() -> None:
    """``join``, ``JOIN`` and ``Join`` are the same function."""
    assert ev('join("-", "a", "b")') == ev('JOIN("-", "a", "b")') == "a-b"


def test_comparison_operators() -> None:
    """``=`` and ``<>`` compare values as exact text; null equals only null."""
    assert ev('[department] = "Sales"') is True
    assert ev('[department] = "sales"') is False
    assert ev('[department] <> "Sales"') is False
    assert ev("[nickName] = null") is True
    assert ev('[employeeId] = "0042"') is True
    assert ev('[active] = "true"') is True


def test_references_listed() -> None:
    """``Expression.references`` names the attributes an expression reads, in order."""
    expr = parse_expression('Join(" ", [givenName], IIF(IsPresent([nickName]), [nickName], [sn]))')
    assert expr.references == ("givenName", "nickName", "nickName", "sn")
    assert str(expr).startswith("Join(")


# --------------------------------------------------------------------------------------- functions


FUNCTION_CASES: list[tuple[str, Any]] = [
    ('Join(" ", [givenName], [sn])', "Zoë Lefèvre"),
    ('Join(";", [emails.value], "x")', "zoe.lefevre@example.com;zoe@home.example;x"),
    ('Join(" ", [nickName], "", [sn])', "Lefèvre"),
    ('Join(" ", [nickName])', None),
    ('Join(",", 1, true)', "1,true"),
    ('Append([userName], ".x")', "zoe.lefevre@example.com.x"),
    ('Append([nickName], ".x")', None),
    ('Append("a", [nickName])', "a"),
    ('Replace([userName], "@example.com", "@contoso.com")', "zoe.lefevre@contoso.com"),
    ('Replace("aaa", "a", "bb")', "bbbbbb"),
    ('Replace("abc", "", "x")', "abc"),
    ('Replace([nickName], "a", "b")', None),
    ('Replace([userName], , "(?<Suffix>@(.)*)", "Suffix", "@contoso.com", , )', "zoe.lefevre@contoso.com"),
    ('Replace("a1b22c", , "[0-9]+", , "#", , )', "a#b#c"),
    ('Replace("a.b", ".", , , "-", , )', "a-b"),
    ('Replace("a1", , "[0-9]", , , [department], )', "aSales"),
    ("ToLower([displayName])", "zoë lefèvre"),
    ('ToLower("ÀÉÎ", "fr-FR")', "àéî"),
    ("ToUpper([sn])", "LEFÈVRE"),
    ("ToUpper([nickName])", None),
    ('Switch([department], "Other", "Sales", "S", "IT", "I")', "S"),
    ('Switch("HR", "Other", "Sales", "S", "IT", "I")', "Other"),
    ('Switch([nickName], "Other", "Sales", "S")', "Other"),
    ('Switch("sales", "Other", "Sales", "S")', "Other"),
    ('IIF([active], "on", "off")', "on"),
    ('IIF([nickName], "on", "off")', "off"),
    ('IIF("FALSE", "on", "off")', "off"),
    ("IIF(IsPresent([nickName]), [nickName], [givenName])", "Zoë"),
    ('IIF(true, "t", Left("x", "not a number"))', "t"),
    ("IsPresent([givenName])", True),
    ('IsPresent("")', False),
    ("IsPresent([nickName])", False),
    ("IsNullOrEmpty([nickName])", True),
    ('IsNullOrEmpty("")', True),
    ('IsNullOrEmpty(" ")', False),
    ("IsNull([nickName])", True),
    ('IsNull("")', False),
    ("IsString([sn])", True),
    ("IsString([active])", False),
    ("Not([active])", False),
    ("Not([nickName])", True),
    ('Equals("a", "a")', True),
    ('Equals("a", "A")', False),
    ('Equals("a", "A", true)', True),
    ('Coalesce([nickName], "", [displayName], "x")', "Zoë Lefèvre"),
    ("Coalesce([nickName], null)", None),
    ("Left([givenName], 2)", "Zo"),
    ("Left([givenName], 10)", "Zoë"),
    ("Left([givenName], 0)", ""),
    ('Left([givenName], "2")', "Zo"),
    ("Left([nickName], 2)", None),
    ('Mid("abcdef", 2, 3)', "bcd"),
    ('Mid("abcdef", 5, 10)', "ef"),
    ('Mid("abc", 9, 1)', ""),
    ('Right("abcdef", 2)', "ef"),
    ('Right("ab", 5)', "ab"),
    ('Right("ab", 0)', ""),
    ('Trim("  a b \t")', "a b"),
    ('StripSpaces(" a b\tc ")', "abc"),
    ("StripSpaces([phoneNumbers.value])", "+33123456789"),
    ("NormalizeDiacritics([displayName])", "Zoe Lefevre"),
    ('NormalizeDiacritics("Åsa Ødegård Łukasz Straße Æsir \u0131")', "Asa Odegard Lukasz Strasse AEsir i"),
    ('NormalizeDiacritics("Dvořák Şahin Nguyễn Ångström")', "Dvorak Sahin Nguyen Angstrom"),
    ('NormalizeDiacritics("日本 ﬁ")', "日本 ﬁ"),
    ("NormalizeDiacritics([nickName])", None),
    ('Split("a,b,,c", ",")', ["a", "b", "", "c"]),
    ('Split("", ",")', []),
    ('Split([nickName], ",")', None),
    ('Word("The quick brown fox", 3)', "brown"),
    ('Word("a,,b;c", 2, ",;")', "b"),
    ('Word("a b", 3)', None),
    ('Word("a b", 0)', None),
    ('PCase("hELLO wORLD")', "Hello World"),
    ("CStr(true)", "true"),
    ("CStr(42)", "42"),
    ("CStr([nickName])", None),
    ("CStr([emails.value])", "zoe.lefevre@example.com"),
    ('CBool("TRUE")', True),
    ('CBool("0")', False),
    ("CBool(2)", True),
    ("CBool([nickName])", None),
    ("Count([emails.value])", 2),
    ("Count([nickName])", 0),
    ("Item([emails.value], 2)", "zoe@home.example"),
    ("Item([emails.value], 3)", None),
    ("RemoveDuplicates([proxyAddresses])", ["smtp:a@example.com", "SMTP:b@example.com"]),
    ("RemoveDuplicates([nickName])", None),
    ('ConvertToBase64("Hello world!")', "SABlAGwAbABvACAAdwBvAHIAbABkACEA"),
    ('ConvertToUTF8Hex("é")', "c3a9"),
    ('Join("@", Left(ToLower(NormalizeDiacritics([givenName])), 1), "example.com")', "z@example.com"),
]


@pytest.mark.parametrize(("text", "expected"), FUNCTION_CASES)
def test_functions(text: str, expected: Any) -> None:
    """Every function computes what its documentation says, including its handling of null."""
    assert ev(text) == expected


def test_every_function_is_documented_and_tested() -> None:
    """Each function has a one-line doc and appears in the function table test above."""
    tested = " ".join(text for text, _ in FUNCTION_CASES)
    for spec in FUNCTIONS.values():
        assert spec.doc.startswith(spec.name + "("), spec.name
        assert spec.name + "(" in tested, f"{spec.name} has no test"
    assert len(describe_functions()) == len(FUNCTIONS)


@pytest.mark.parametrize(
    ("text", "function", "message"),
    [
        ('Left("abc", "x")', "Left", "whole number"),
        ('Left("abc", -1)', "Left", "negative"),
        ('Mid("abc", 0, 1)', "Mid", "counts from 1"),
        ('Split("a", "")', "Split", "separator"),
        ('IIF("maybe", 1, 2)', "IIF", "true or false"),
        ('CBool("perhaps")', "CBool", "boolean"),
        ("Item([emails.value], 0)", "Item", "counts from 1"),
    ],
)
def test_evaluation_errors(text: str, function: str, message: str) -> None:
    """A value of the wrong kind fails evaluation with the function's name and offset, not a Python error."""
    with pytest.raises(ExpressionEvaluationError, match=message) as info:
        ev(f'Join("", "", {text})')
    assert info.value.position == 13
    assert function in str(info.value)


# ------------------------------------------------------------------------------------ parse errors


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("Foo(1)", 0, "unknown function 'Foo'"),
        ('Jion(" ", "a")', 0, "did you mean Join"),
        ('Join(" ", Left("a"))', 10, "Left takes 2 arguments, got 1"),
        ("IIF(true, 1)", 0, "IIF takes 3 arguments, got 2"),
        ("ToLower()", 0, "ToLower takes 1 to 2 arguments, got 0"),
        ('Switch([x], "d", "k", "v", "k2")', 0, "even number of arguments"),
        ('Replace("a", "b")', 0, "Replace takes 3 to 7 arguments, got 2"),
        ('Replace("a", "b", "c", "d")', 0, "Replace takes 3 arguments"),
        ('Replace("a", "b", "c", , "e", , )', 0, "exactly one of oldValue and regexPattern"),
        ('Replace("a", , [userName], , "e", , )', 15, "regexPattern must be a string literal"),
        ('Replace("a", , "(x)", "y", "e", , )', 22, "no group named 'y'"),
        ('Replace("a", , "x", , "e", , "t")', 29, "template"),
        ('Replace("a", , "(", , "e", , )', 15, "invalid regular expression"),
        ("Join(", 5, "expected a value"),
        ('Join(" " [sn])', 9, "expected ',' or ')' to close Join( opened at offset 0"),
        ('Join(" ", [sn]', 14, "found end of expression"),
        ('Left("a", 1) Right', 13, "expected end of expression"),
        ('"abc', 0, "unterminated string"),
        ('Join(" ", "abc)', 10, "unterminated string"),
        ("[userName", 0, "unterminated attribute reference"),
        ("[ ]", 0, "empty attribute reference"),
        ("[emails[type eq ]].value]", 16, "comparison value"),
        ('[emails[type xx "w"]]', 13, "comparison operator"),
        ("userName", 0, "write an attribute as [userName]"),
        ("Join('a', 'b')", 5, "double quotes"),
        ('Join(" ", [sn]) ; rm', 16, "unexpected character ';'"),
        ("", 0, "empty expression"),
        ("   ", 0, "empty expression"),
        ("Guid()", 0, "deterministic"),
        ("Now()", 0, "deterministic"),
        ("1234567890123456789", 0, "number longer"),
    ],
)
def test_parse_errors_name_position(text: str, position: int, message: str) -> None:
    """Each invalid expression is refused at parse time with the exact offset and what was expected."""
    exc = error(text)
    assert exc.position == position, str(exc)
    assert message in str(exc)
    assert str(exc).startswith(f"at offset {position}: ")


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('echo pwned')",
        '__import__("os").system("echo pwned")',
        'eval("1+1")',
        'exec("print(1)")',
        "[userName].__class__",
        'Join(" ", [sn]) + 1',
        "lambda: 1",
        "{}.__class__",
        "1; import os",
    ],
)
def test_python_is_never_evaluated(text: str) -> None:
    """Python code is not an expression: it is refused with a clear parse error and nothing runs."""
    exc = error(text)
    assert exc.position >= 0
    assert "at offset" in str(exc)


def test_hostile_text_in_a_string_is_just_text() -> None:
    """Python code inside a string literal is only text: it comes out unchanged."""
    hostile = "__import__('os').system('rm -rf /')"
    assert ev(f'ToUpper("{hostile}")') == hostile.upper()


# ------------------------------------------------------------------------------------------ bounds


def test_length_bound() -> None:
    """An expression longer than MAX_LENGTH is refused before it is tokenized."""
    text = 'Join(" ", ' + ", ".join(['"x"'] * 2000) + ")"
    assert len(text) > MAX_LENGTH
    assert "limit" in str(error(text))


def test_depth_bound() -> None:
    """Calls nested deeper than MAX_DEPTH are refused with the offset of the first call too deep."""
    ok = "ToLower(" * MAX_DEPTH + '"x"' + ")" * MAX_DEPTH
    assert ev(ok) == "x"
    deep = "ToLower(" * (MAX_DEPTH + 1) + '"x"' + ")" * (MAX_DEPTH + 1)
    exc = error(deep)
    assert exc.position == len("ToLower(") * MAX_DEPTH
    assert "nested deeper" in str(exc)


def test_depth_bound_holds_far_past_the_limit() -> None:
    """A very deep nesting within the length limit is an ExpressionError, never a RecursionError."""
    deep = "Not(" * 500 + "true" + ")" * 500
    assert "nested deeper" in str(error(deep))


def test_output_size_bound() -> None:
    """A result growing past MAX_STRING is an evaluation error, checked before the string is built."""
    text = '"aaaaaaaaaa"'
    for _ in range(3):
        text = f'Replace({text}, "a", "aaaaaaaaaa")'
    assert ev(text) == "a" * 10_000
    with pytest.raises(ExpressionEvaluationError, match=f"longer than {MAX_STRING}"):
        ev(f'Replace({text}, "a", "aaaaaaaaaa")')


def test_join_output_bound() -> None:
    """Join refuses to build a string longer than MAX_STRING from long inputs."""
    resource = {"values": ["x" * 40_000, "y" * 40_000]}
    with pytest.raises(ExpressionEvaluationError, match="longer than"):
        ev('Join(",", [values])', resource)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(a+)+$", "repeated group"),
        ("(a|aa)*b", "repeated group"),
        ("(x*y)*", "repeated group"),
        ("(a|b)+", "repeated group"),
        ("a*b*c*d", "at most two"),
        (r"(a)\1", "backreferences"),
        ("(?P<x>a)(?P=x)", "backreferences"),
        ("x" * 200, "longer than"),
    ],
)
def test_regex_guard(pattern: str, message: str) -> None:
    """Regular expressions that can backtrack catastrophically are refused when the expression is parsed."""
    exc = error(f'Replace([userName], , "{pattern}", , "z", , )')
    assert exc.position == 22
    assert message in str(exc)


def test_regex_subject_bound() -> None:
    """An allowed regex finishes on an adversarial subject (an exponential blow-up would run into the test
    timeout instead); longer subjects are refused at evaluation."""
    expr = parse_expression('Replace([x], , "a*a*b", , "z", , )')
    assert expr.evaluate({"x": "a" * MAX_REGEX_SUBJECT}) == "a" * MAX_REGEX_SUBJECT
    with pytest.raises(ExpressionEvaluationError, match="at most"):
        expr.evaluate({"x": "a" * (MAX_REGEX_SUBJECT + 1)})


def test_parse_results_are_cached() -> None:
    """Parsing the same text twice returns the same immutable Expression."""
    assert parse_expression("ToLower([sn])") is parse_expression("ToLower([sn])")


# ---------------------------------------------------------------------------------------- properties

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=200)
@given(st.lists(_TEXT, max_size=6), st.sampled_from([",", ";", " | ", "::"]))
def test_join_then_split_round_trips(parts: list[str], separator: str) -> None:
    """Split(Join(sep, xs…), sep) gives back the non-empty xs when no x holds a character of sep."""
    # Not merely "sep not in x": ":" then "0" joined by "::" is ":::0", which splits as ["", ":0"].
    parts = [p for p in parts if not set(separator) & set(p)]
    kept = [p for p in parts if p]
    resource = {"parts": parts}
    joined = ev(f"Join({_quote(separator)}, [parts])", resource)
    assert joined == (separator.join(kept) if kept else None)
    split = ev(f"Split(Join({_quote(separator)}, [parts]), {_quote(separator)})", resource)
    assert split == (kept if kept else None)


@settings(max_examples=200)
@given(_TEXT)
def test_string_literals_round_trip(value: str) -> None:
    """Any text written as a string literal (quotes and backslashes escaped) evaluates to itself."""
    assert ev(_quote(value)) == value


@settings(max_examples=200)
@given(_TEXT)
def test_case_functions(value: str) -> None:
    """ToLower(ToUpper(x)) is x.upper().lower() (x.lower() for ASCII), and ToUpper is idempotent."""
    resource = {"x": value}
    assert ev("ToLower(ToUpper([x]))", resource) == value.upper().lower()
    if value.isascii():
        assert ev("ToLower(ToUpper([x]))", resource) == value.lower()
    assert ev("ToUpper(ToUpper([x]))", resource) == ev("ToUpper([x])", resource)


@settings(max_examples=200)
@given(_TEXT)
def test_normalize_diacritics_properties(value: str) -> None:
    """NormalizeDiacritics leaves no combining mark, is idempotent, and keeps ASCII text as it is."""
    resource = {"x": value}
    once = ev("NormalizeDiacritics([x])", resource)
    if value == "":
        assert once == ""
        return
    assert not any(unicodedata.category(c) == "Mn" for c in unicodedata.normalize("NFD", once))
    assert ev("NormalizeDiacritics(NormalizeDiacritics([x]))", resource) == once
    if value.isascii():
        assert once == value


@settings(max_examples=200)
@given(_TEXT, st.integers(min_value=0, max_value=25), st.integers(min_value=1, max_value=25))
def test_left_mid_right_agree_with_slicing(value: str, n: int, start: int) -> None:
    """Left, Right and Mid (1-based) are Python slices; Left(s, n) & Mid(s, n+1, len) rebuild s."""
    resource = {"x": value, "n": n, "start": start}
    assert ev("Left([x], [n])", resource) == value[:n]
    assert ev("Right([x], [n])", resource) == (value[-n:] if n else "")
    assert ev("Mid([x], [start], [n])", resource) == value[start - 1 : start - 1 + n]
    resource["after"] = n + 1
    assert ev('Join("", Left([x], [n]), Mid([x], [after], 100))', resource) == (value or None)


@settings(max_examples=200)
@given(st.text(alphabet="ab(|)*+?[]{}\\.^$0123,", max_size=20))
def test_regex_guard_never_crashes(pattern: str) -> None:
    """Any pattern either parses into a bounded regex or is refused with an ExpressionError, nothing else."""
    try:
        expr = parse_expression(f'Replace([x], , {_quote(pattern)}, , "z", , )')
    except ExpressionError:
        return
    expr.evaluate({"x": "ab" * (MAX_REGEX_SUBJECT // 2)})  # finishes: a blow-up runs into the test timeout
