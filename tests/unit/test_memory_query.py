"""The memory directory's search plans: remembered per filter, exact index shortcuts, right after writes."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins import ldapfilter
from plugins.directory import (
    AttrValue,
    DirectoryError,
    Entry,
    InvalidFilterError,
    Modification,
    ModOp,
    Scope,
)
from plugins.memory import MemoryDirectory
from plugins.memory.query import _LAST_EQUALITY, Plans, Query

PERSON: dict[str, list[AttrValue]] = {"objectClass": ["inetOrgPerson"], "cn": ["X"], "sn": ["X"]}


async def found(directory: MemoryDirectory, ldap_filter: str, base: str | None = None) -> list[str]:
    """The DNs a search returns, sorted."""
    pages = directory.search(base or directory.base_dn, ldap_filter, attributes=["uid"])
    return sorted([entry.dn async for page in pages for entry in page])


async def scanned(directory: MemoryDirectory, ldap_filter: str) -> list[str]:
    """The DNs of every entry that the filter matches, evaluated entry by entry (no index)."""
    node = ldapfilter.parse(ldap_filter)
    every: list[Entry] = [e async for page in directory.search(directory.base_dn) for e in page]
    return sorted(entry.dn for entry in every if node.matches(entry.attributes))


def test_a_query_splits_equality_conjuncts_from_the_rest() -> None:
    """Equality and approx conjuncts become index keys (options dropped); every other conjunct is checked."""
    query = Query.of(ldapfilter.parse("(&(objectClass=Person)(UID;x=A  b)(cn~=Z)(|(uid=a)(uid=b))(mail=*))"))
    assert query.keys == (("objectclass", "person"), ("uid", "a b"), ("cn", "z"))
    assert [str(item) for item in query.narrowing] == ["(|(uid=a)(uid=b))"]
    assert [str(item) for item in query.rest] == ["(|(uid=a)(uid=b))", "(mail=*)"]
    assert Query.of(ldapfilter.parse("(uid=a)")).rest == ()


def test_a_query_refuses_a_filter_it_cannot_evaluate() -> None:
    """An unsupported matching rule fails when the plan is made, as it did at search time."""
    with pytest.raises(InvalidFilterError, match="not supported"):
        Query.of(ldapfilter.parse("(cn:1.2.3.4:=x)"))


async def test_a_remembered_plan_answers_after_modify_rename_and_delete() -> None:
    """A plan made before a write answers from the index as it is after the write, for any case variant."""
    async with MemoryDirectory() as directory:
        base = directory.base_dn
        await directory.add(f"uid=alice,{base}", {**PERSON, "uid": ["alice"], "mail": ["a@x.org", "Alice@X.org"]})
        wanted = "(&(objectClass=inetOrgPerson)(mail=alice@x.org))"
        assert await found(directory, wanted) == [f"uid=alice,{base}"]
        await directory.modify(f"uid=alice,{base}", [Modification(ModOp.DELETE, "mail", ("ALICE@x.org",))])
        assert await found(directory, wanted) == []
        assert await found(directory, "(&(objectClass=inetOrgPerson)(MAIL=A@X.ORG))") == [f"uid=alice,{base}"]
        await directory.rename(f"uid=alice,{base}", "uid=Alicia")
        assert await found(directory, "(&(objectClass=inetOrgPerson)(uid=alice))") == []
        assert await found(directory, "(&(objectClass=inetOrgPerson)(uid=ALICIA))") == [f"uid=Alicia,{base}"]
        await directory.delete(f"uid=Alicia,{base}")
        assert await found(directory, "(&(objectClass=inetOrgPerson)(uid=ALICIA))") == []


async def test_an_absent_attribute_is_found_once_added() -> None:
    """A conjunct on an attribute no entry has matches nothing, then the entry that gains it."""
    async with MemoryDirectory() as directory:
        dn = f"uid=bob,{directory.base_dn}"
        await directory.add(dn, {**PERSON, "uid": ["bob"]})
        wanted = "(&(uid=bob)(title=Boss))"
        assert await found(directory, wanted) == []
        await directory.modify(dn, [Modification(ModOp.ADD, "title", ("boss",))])
        assert await found(directory, wanted) == [dn]
        await directory.modify(dn, [Modification(ModOp.REPLACE, "title", ())])
        assert await found(directory, wanted) == []


async def test_an_attribute_with_options_is_not_matched_by_its_base_name() -> None:
    """``cn;lang-en: Zed`` alone does not match ``(cn=Zed)``, through the index as by evaluation."""
    async with MemoryDirectory() as directory:
        dn = f"uid=zed,{directory.base_dn}"
        await directory.add(dn, {**PERSON, "uid": ["zed"], "cn;lang-en": ["Zed"]})
        for ldap_filter in ("(cn=zed)", "(&(uid=zed)(cn=Zed))", "(&(cn=zed)(uid=zed))", "(cn;lang-en=zed)"):
            assert await found(directory, ldap_filter) == await scanned(directory, ldap_filter) == []
        assert directory.explain("(cn=zed)") == 0
        await directory.modify(dn, [Modification(ModOp.ADD, "cn", ("ZED",))])
        assert await found(directory, "(&(cn=zed)(uid=zed))") == [dn]


async def test_an_entry_of_the_smallest_bucket_must_satisfy_the_other_keys() -> None:
    """The candidates come from the rarest key; an entry among them without the other keys' values is out."""
    async with MemoryDirectory() as directory:
        base = directory.base_dn
        for number, extra in enumerate([{"mail": ["a"]}, {"mail": ["A"], "title": ["b"]}, {"title": ["B"]}]):
            await directory.add(f"uid=p{number},{base}", {**PERSON, "uid": [f"p{number}"], **extra})
        for ldap_filter in ("(&(mail=a)(title=b))", "(&(TITLE=b)(mail~=a)(objectClass=inetOrgPerson))"):
            assert await found(directory, ldap_filter) == await scanned(directory, ldap_filter) == [f"uid=p1,{base}"]


async def test_scope_and_base_still_bound_an_indexed_search() -> None:
    """An index hit outside the base or the scope is left out."""
    async with MemoryDirectory() as directory:
        base = directory.base_dn
        await directory.add(f"ou=a,{base}", {"objectClass": ["organizationalUnit"], "ou": ["a"]})
        await directory.add(f"uid=in,ou=a,{base}", {**PERSON, "uid": ["in"]})
        await directory.add(f"uid=out,{base}", {**PERSON, "uid": ["out"]})
        assert await found(directory, "(cn=x)", f"ou=a,{base}") == [f"uid=in,ou=a,{base}"]
        onelevel = [
            e.dn
            async for page in directory.search(base, "(&(cn=x)(sn=x))", scope=Scope.ONELEVEL, attributes=["1.1"])
            for e in page
        ]
        assert onelevel == [f"uid=out,{base}"]


async def test_returned_values_are_copies() -> None:
    """Changing what a search returned changes neither the directory nor the next search."""
    async with MemoryDirectory() as directory:
        dn = f"uid=carol,{directory.base_dn}"
        await directory.add(dn, {**PERSON, "uid": ["carol"], "mail": ["c@x.org"]})
        for selection in (["mail", "uid"], ["*"], None):
            [[entry]] = [page async for page in directory.search(dn, "(uid=carol)", attributes=selection)]
            entry.attributes["mail"].append("mallory@x.org")
            entry.attributes.set("uid", ["mallory"])
        assert await found(directory, "(mail=mallory@x.org)") == []
        assert await found(directory, "(&(uid=carol)(mail=c@x.org))") == [dn]


async def test_plans_are_remembered_up_to_a_bound() -> None:
    """Plans are kept per filter string, at most 4,096 of them, and none for a filter too long to cache."""
    async with MemoryDirectory() as directory:
        for number in range(5000):
            await found(directory, f"(uid=u{number})")
        assert 0 < len(directory._queries) <= 4096
        long = "(|" + "".join(f"(uid=u{number})" for number in range(200)) + ")"
        assert len(long) > ldapfilter.CACHED_LENGTH
        await found(directory, long)
        assert long not in directory._queries


async def test_a_bad_filter_fails_every_time() -> None:
    """A filter that does not parse or cannot be evaluated is refused at each search, not remembered."""
    async with MemoryDirectory() as directory:
        for _ in range(2):
            with pytest.raises(InvalidFilterError):
                await found(directory, "(uid=x")
            with pytest.raises(InvalidFilterError):
                await found(directory, "(uid:1.2.3:=x)")


# ------------------------------------------------------------------------------ property: index == scan

_VALUES = ["a", "A", " a ", "b b", "B  b", "é", "É"]
_ATTRIBUTES = ["mail", "title", "cn;lang-en", "description"]
_NAMES = ["mail", "MAIL", "title", "Title", "cn", "cn;lang-en", "description", "uid", "objectClass"]

_values = st.lists(
    st.sampled_from(_VALUES), min_size=1, max_size=2, unique_by=lambda value: ldapfilter.normalize_value("", value)
)
_extra = st.dictionaries(st.sampled_from(_ATTRIBUTES), _values, max_size=3)
_operation = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), _extra),
    st.tuples(
        st.just("modify"),
        st.integers(0, 3),
        st.sampled_from(list(ModOp)),
        st.sampled_from(_ATTRIBUTES),
        st.lists(st.sampled_from(_VALUES), max_size=2),
    ),
    st.tuples(st.just("delete"), st.integers(0, 3)),
    st.tuples(st.just("rename"), st.integers(0, 3), st.integers(0, 3)),
)
_item = st.one_of(
    st.builds(
        lambda name, op, value: f"({name}{op}{ldapfilter.escape_value(value)})",
        st.sampled_from(_NAMES),
        st.sampled_from(["=", "~="]),
        st.sampled_from([*_VALUES, "p1", "P2", "inetOrgPerson", "x"]),
    ),
    st.builds(lambda name: f"({name}=*)", st.sampled_from(_NAMES)),
)
#: Equalities on the attributes the entries carry: their buckets overlap, so candidates need the other keys.
_equality = st.builds(
    lambda name, op, value: f"({name}{op}{ldapfilter.escape_value(value)})",
    st.sampled_from(["mail", "MAIL", "title", "Title", "description", "cn;lang-en"]),
    st.sampled_from(["=", "~="]),
    st.sampled_from(_VALUES),
)
_conjunction = st.builds(lambda items: "(&" + "".join(items) + ")", st.lists(_equality, min_size=2, max_size=3))
_filter = st.recursive(
    st.one_of(_item, _conjunction),
    lambda inner: st.one_of(
        st.builds(lambda items: "(&" + "".join(items) + ")", st.lists(inner, max_size=3)),
        st.builds(lambda items: "(|" + "".join(items) + ")", st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda item: f"(!{item})", inner),
    ),
    max_leaves=5,
)


async def _apply(directory: MemoryDirectory, operation: tuple[Any, ...]) -> None:
    base = directory.base_dn
    try:
        match operation:
            case ("add", number, extra):
                await directory.add(f"uid=p{number},{base}", {**PERSON, "uid": [f"p{number}"], **extra})
            case ("modify", number, op, attribute, values):
                await directory.modify(f"uid=p{number},{base}", [Modification(op, attribute, tuple(values))])
            case ("delete", number):
                await directory.delete(f"uid=p{number},{base}")
            case ("rename", number, other):
                await directory.rename(f"uid=p{number},{base}", f"uid=P{other}")
    except DirectoryError:
        pass  # a refused write changes nothing: the searches below still have to agree


@settings(max_examples=200)
@given(
    people=st.lists(_extra, min_size=4, max_size=4),
    operations=st.lists(_operation, min_size=1, max_size=10),
    filters=st.lists(_filter, min_size=1, max_size=6),
)
def test_indexed_search_agrees_with_evaluating_every_entry(
    people: list[dict[str, list[AttrValue]]], operations: list[tuple[Any, ...]], filters: list[str]
) -> None:
    """After any sequence of writes, a search (its plan remembered from before the writes) finds exactly
    the entries that evaluating the filter on every entry finds: case variants, multi-valued and absent
    attributes, attribute options, AND/OR/NOT."""

    async def run() -> None:
        async with MemoryDirectory() as directory:
            for number, extra in enumerate(people):
                await _apply(directory, ("add", number, extra))
            for ldap_filter in filters:
                assert await found(directory, ldap_filter) == await scanned(directory, ldap_filter)
            for operation in operations:
                await _apply(directory, operation)
                for ldap_filter in filters:
                    for variant in (ldap_filter, f"(&(objectClass=inetOrgPerson){ldap_filter})"):
                        assert await found(directory, variant) == await scanned(directory, variant), variant

    asyncio.run(run())


SHAPE_HEADS = [
    "(&(objectClass=inetOrgPerson)(uid=",
    "(&(objectClass=user)(!(objectClass=computer))(|(mail=a)(mail=b))(cn~=Z)(sAMAccountName=",
    "(&(cn=a\\29\\28)(objectGUID=",
    "(&(cn=a\\(uid=",  # an RFC 1960 escape before the last '(': not the shape it looks like
    "(&(uid=",
]
RAW_VALUES = st.one_of(
    st.lists(st.sampled_from([*"aZ09 *()\\\x00é\u017f", "\\2a", "\\5c", "\\c3\\a9", "\\ff", "\\0"]), max_size=8).map(
        "".join
    ),
    st.builds(ldapfilter.escape_value, st.one_of(st.text(max_size=8), st.binary(max_size=8))),
)


def _plan_or_error(plan: Any, text: str) -> Any:
    try:
        return plan(text)
    except InvalidFilterError:
        return "refused"


@settings(max_examples=200)
@given(head=st.sampled_from(SHAPE_HEADS), raw=RAW_VALUES)
def test_a_plan_by_shape_is_the_plan_of_the_parsed_filter(head: str, raw: str) -> None:
    """Once a ``(&…(attr=value))`` shape is known, a new value's plan (node, keys, narrowing, rest) is
    exactly the parsed filter's, and a value the parser refuses is refused."""
    plans = Plans()
    _plan_or_error(plans.get, head + "plain))")
    text = head + raw + "))"
    expected = _plan_or_error(lambda t: Query.of(ldapfilter.parse(t)), text)
    assert _plan_or_error(plans.get, text) == expected
    assert _plan_or_error(plans.get, text) == expected  # remembered by text too


def test_a_plan_by_shape_is_used() -> None:
    """A lookup by a new value takes its plan from the shape, without parsing the filter."""
    plans = Plans()
    plans.get("(&(objectClass=inetOrgPerson)(uid=first))")
    before = ldapfilter._parse_cached.cache_info().misses
    query = plans.get("(&(objectClass=inetOrgPerson)(uid=Sec\\2aond))")
    assert ldapfilter._parse_cached.cache_info().misses == before
    assert query.keys == (("objectclass", "inetorgperson"), ("uid", "sec*ond"))


#: ``query._LAST_EQUALITY`` as first written, a repetition per plain character of the value.
_ONE_AT_A_TIME = re.compile(r"(\(&.*\(([A-Za-z][A-Za-z0-9-]*)=)((?:[^*()\\\x00]|\\[0-9A-Fa-f]{2})*)\)\)")


@settings(max_examples=300)
@given(
    head=st.one_of(st.sampled_from(SHAPE_HEADS), st.text(alphabet="(&)=ab\\\n", max_size=12)),
    raw=RAW_VALUES,
    tail=st.sampled_from(["))", ")", ")))", "", ")(x=y))", "\n))"]),
)
def test_the_shape_pattern_takes_plain_runs_as_the_one_character_form_does(head: str, raw: str, tail: str) -> None:
    """The shape pattern, which takes a value's plain characters a run at a time, matches exactly the texts
    the one-repetition-per-character form matches, with the same groups."""
    text = head + raw + tail
    mine, reference = _LAST_EQUALITY.fullmatch(text), _ONE_AT_A_TIME.fullmatch(text)
    assert (mine and mine.groups()) == (reference and reference.groups())


@pytest.mark.timeout(10)
def test_a_long_value_that_does_not_end_the_shape_is_refused_at_once() -> None:
    """A filter that looks like the shape up to a long value but ends otherwise (a nested AND's ``)))``) is
    refused in time linear in its length, never by trying every split of the value's characters."""
    value = "uid=t-ann,ou=people,dc=example,dc=com" * 20
    for tail in (")))", ")", "*))", "\\))"):
        assert _LAST_EQUALITY.fullmatch(f"(&(objectClass=inetOrgPerson)(&(uid=t-*)(manager={value}{tail}") is None
