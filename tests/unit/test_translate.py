"""SCIM filter → LDAP filter translation: agrees with direct evaluation, and values never change structure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.scim.handler import ScimHandler
from agent.scim.listing import Lister
from agent.scim.profile import CORE_USER, ENTERPRISE, ResourceMapping, load_profile
from agent.scim.refs import References
from agent.scim.translate import compare_template, translate, translation
from plugins import ldapfilter
from plugins.memory import MemoryDirectory, MemorySettings
from protocol import scimeval
from protocol import scimfilter as sf
from protocol.envelope import ScimOperation
from protocol.errors import ScimError

PROFILE = load_profile("openldap")
USERS = PROFILE.users

# Characters that stress escaping (LDAP metacharacters, NUL, backslash, spaces, which LDAP partly ignores),
# case and unicode folding.
AWKWARD = st.text(alphabet=st.sampled_from([*"aAbB*()\\ \x00éÉß", "\u017f"]), min_size=0, max_size=5)

ATTRIBUTES = [
    sf.AttrPath("userName"),
    sf.AttrPath("title"),
    sf.AttrPath("displayName"),
    sf.AttrPath("name", "givenName"),
    sf.AttrPath("emails"),
    sf.AttrPath("emails", "value"),
    sf.AttrPath("department", uri=ENTERPRISE),
    sf.AttrPath("nickName"),  # not mapped
]
OPS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"]


def compares(attrs: list[sf.AttrPath]) -> st.SearchStrategy[sf.Filter]:
    compare = st.builds(sf.Compare, st.sampled_from(attrs), st.sampled_from(OPS), AWKWARD)
    present = st.builds(sf.Present, st.sampled_from(attrs))
    return st.one_of(compare, compare, present)


value_filters = st.recursive(
    compares([sf.AttrPath("type"), sf.AttrPath("value")]),
    lambda inner: st.one_of(
        st.builds(sf.Not, inner),
        st.builds(lambda a, b: sf.And((a, b)), inner, inner),
        st.builds(lambda a, b: sf.Or((a, b)), inner, inner),
    ),
    max_leaves=3,
)

filters = st.recursive(
    st.one_of(compares(ATTRIBUTES), st.builds(sf.ValuePath, st.just(sf.AttrPath("emails")), value_filters)),
    lambda inner: st.one_of(
        st.builds(sf.Not, inner),
        st.builds(lambda a, b: sf.And((a, b)), inner, inner),
        st.builds(lambda a, b: sf.Or((a, b)), inner, inner),
    ),
    max_leaves=5,
)

people = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "title": AWKWARD,
            "displayName": AWKWARD,
            "givenName": AWKWARD,
            "email": AWKWARD,
            "department": AWKWARD,
        },
    ),
    min_size=1,
    max_size=5,
)


def _user(index: int, person: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [CORE_USER, ENTERPRISE], "userName": f"u{index}{person.get('title', '')}x"}
    if "title" in person:
        body["title"] = person["title"]
    if "displayName" in person:
        body["displayName"] = person["displayName"]
    if "givenName" in person:
        body["name"] = {"givenName": person["givenName"]}
    if "email" in person:
        body["emails"] = [{"type": "work", "value": person["email"]}]
    if "department" in person:
        body[ENTERPRISE] = {"department": person["department"]}
    return body


async def _seeded(persons: list[dict[str, str]]) -> tuple[MemoryDirectory, ScimHandler, list[dict[str, Any]]]:
    directory = MemoryDirectory(MemorySettings(seed_users=1))  # seeding creates ou=people and ou=groups
    await directory.open()
    handler = ScimHandler(directory, PROFILE)
    resources = []
    for index, person in enumerate(persons):
        result = await handler.handle(ScimOperation("POST", "/Users", {}, _user(index, person)))
        assert result.status == 201, result.body
        resources.append(result.body)
    listed = await handler.handle(ScimOperation("GET", "/Users", {"count": "1000"}))
    return directory, handler, listed.body["Resources"]


async def _check(persons: list[dict[str, str]], nodes: list[sf.Filter]) -> None:
    directory, handler, resources = await _seeded(persons)
    refs = References(directory, PROFILE, directory.base_dn)
    for node in nodes:
        try:
            scimeval.check(node)
        except Exception:
            continue  # refused before any search; covered by the suite
        expected = {r["id"] for r in resources if scimeval.matches(node, r)}
        ldap, exact = await translate(node, USERS, refs)
        selected = set()
        async for page in directory.search(directory.base_dn, ldap, attributes=[USERS.id_attribute]):
            selected.update(str(e.first(USERS.id_attribute)) for e in page)
        assert selected >= expected, (node.to_string(), ldap)
        if exact:
            assert selected == expected, (node.to_string(), ldap)
        result = await handler.handle(ScimOperation("GET", "/Users", {"filter": node.to_string(), "count": "1000"}))
        assert result.status == 200, result.body
        assert {r["id"] for r in result.body["Resources"]} == expected, (node.to_string(), ldap)
        assert result.body["totalResults"] == len(expected)
    await directory.close()


@settings(max_examples=60)
@given(persons=people, nodes=st.lists(filters, min_size=1, max_size=6))
def test_translation_agrees_with_direct_evaluation(persons: list[dict[str, str]], nodes: list[sf.Filter]) -> None:
    """The LDAP filter selects a superset of what the SCIM filter matches (equal when exact), and lists equal it."""
    asyncio.run(_check(persons, nodes))


@pytest.mark.parametrize(("stored", "query"), [(" ab", 'title eq "ab"'), ("a  b", 'title co "a b"')])
def test_insignificant_spaces_follow_scim_rules(stored: str, query: str) -> None:
    """A stored value differing only in spaces is not selected by an exact-looking string comparison."""
    asyncio.run(_check([{"title": stored}], [sf.parse_filter(query)]))


# ---- structure: values are data, never filter syntax ----------------------------------------------


def _shape(node: ldapfilter.Filter) -> Any:
    """The filter's structure with every assertion value blanked out."""
    if isinstance(node, ldapfilter.And | ldapfilter.Or):
        return (type(node).__name__, tuple(_shape(c) for c in node.children))
    if isinstance(node, ldapfilter.Not):
        return ("Not", _shape(node.child))
    if isinstance(node, ldapfilter.Substring):
        return ("Substring", node.attribute.lower(), node.initial is None, len(node.any), node.final is None)
    if isinstance(node, ldapfilter.Present):
        return ("Present", node.attribute.lower())
    return (type(node).__name__, getattr(node, "attribute", "").lower())


def _values(node: ldapfilter.Filter) -> list[Any]:
    out: list[Any] = []
    for item in node.walk():
        if isinstance(item, ldapfilter.Substring):
            out.append((item.initial, item.any, item.final))
        elif hasattr(item, "value"):
            out.append(item.value)
    return out


async def _ldap(text: str) -> str:
    directory = MemoryDirectory()
    refs = References(directory, PROFILE, directory.base_dn)
    ldap, _ = await translate(sf.parse_filter(text), USERS, refs)
    return ldap


SHAPES = [
    'userName eq "{v}"',
    'title co "{v}"',
    'title sw "{v}"',
    'displayName ew "{v}"',
    'emails[type eq "work" and value co "{v}"]',
    'not (title eq "{v}") and userName ne "{v}"',
    f'{ENTERPRISE}:department eq "{{v}}" or name.givenName sw "{{v}}"',
]


def _json_escape(value: str) -> str:
    return json.dumps(value)[1:-1]


@pytest.mark.parametrize("template", SHAPES)
@settings(max_examples=40)
@given(value=st.text(min_size=1, max_size=12).filter(lambda v: v.strip() != ""))
def test_values_never_change_structure(template: str, value: str) -> None:
    """Whatever the value, the LDAP filter has the structure of a plain value, and carries the value verbatim
    (a substring's with its runs of spaces folded to one and none at its ends, as LDAP compares them)."""
    reference = asyncio.run(_ldap(template.replace("{v}", "plain")))
    actual = asyncio.run(_ldap(template.replace("{v}", _json_escape(value))))
    assert _shape(ldapfilter.parse(actual)) == _shape(ldapfilter.parse(reference))
    for found in _values(ldapfilter.parse(actual)):
        if isinstance(found, str):
            assert found in {value, "plain", "inetOrgPerson"}, found
        elif isinstance(found, tuple):
            pieces = [p for p in (found[0], *found[1], found[2]) if p is not None]
            assert pieces == [" ".join(value.split())] or pieces == ["plain"], pieces


@pytest.mark.parametrize(
    "value", ["*)(uid=*", "*", ")(|(objectClass=*)", "\\", "\\2a", "\x00", "a\x00*)(!(cn=*", "é(ß)*"]
)
async def test_injection_values_are_single_assertions(value: str) -> None:
    """An injection attempt in ``userName eq`` is one equality item on uid holding exactly that value."""
    ldap = await _ldap(f'userName eq "{_json_escape(value)}"')
    node = ldapfilter.parse(ldap)
    assert isinstance(node, ldapfilter.And)
    assert node.children[0] == ldapfilter.parse(USERS.ldap_filter)
    item = node.children[1]
    assert isinstance(item, ldapfilter.Equality)
    assert item.attribute == "uid"
    assert item.value == value
    assert len(node.children) == 2


# ---- the comparison template: the general path's answer, spliced ----------------------------------


def _template_cases() -> list[tuple[ResourceMapping, sf.AttrPath, str]]:
    """Every (mapping, path, operator) of both profiles for which ``compare_template`` makes a template."""
    paths = {sf.AttrPath("id"), sf.AttrPath("meta", "resourceType"), sf.AttrPath("nickName")}
    paths.add(sf.AttrPath("userName", uri=CORE_USER))
    for profile in (load_profile("openldap"), load_profile("ad")):
        for mapping in profile.resources:
            for attr in mapping.attributes:
                name, sub, _ = attr.parts
                paths.update(sf.AttrPath(name, s) for s in (None, sub, "value", "type", "other"))
    return [
        (mapping, path, op)
        for profile in (load_profile("openldap"), load_profile("ad"))
        for mapping in profile.resources
        for path in sorted(paths, key=str)
        for op in OPS
        if compare_template(mapping, path, op) is not None
    ]


TEMPLATE_CASES = _template_cases()


def test_the_usual_lookup_has_a_template() -> None:
    """``userName eq``, ``co``, ``sw``, ``ew`` and a multi-valued attribute (emails) have templates."""
    found = {(m.name, p.to_string(), op) for m, p, op in TEMPLATE_CASES}
    for op in ("eq", "co", "sw", "ew"):
        assert ("User", "userName", op) in found
    assert ("User", "emails", "eq") in found
    assert not any(p.name in {"id", "meta"} or p.uri for _, p, _ in TEMPLATE_CASES)


async def _template_agrees(value: str) -> None:
    refs = References(MemoryDirectory(), PROFILE, "dc=example,dc=com")
    for mapping, path, op in TEMPLATE_CASES:
        node = sf.Compare(path, op, value)  # type: ignore[arg-type]
        template = compare_template(mapping, path, op)
        assert template is not None
        templated = template.ldap_filter(value)
        if templated is None:  # an empty substring, or one of only spaces: the general path decides
            assert op != "eq"
            assert value.strip() == ""
            continue
        scimeval.check(node)  # the lister skips the check for a templated comparison: it cannot fail
        general = await translation(node, mapping, refs)
        assert (templated, False, False) == general, (mapping.name, node.to_string())


@settings(max_examples=80)
@given(value=st.one_of(AWKWARD, st.text(), st.text(alphabet=st.sampled_from([*"*()\\\x00\"'é\u017f\U0001f600 "]))))
def test_template_equals_the_general_translation(value: str) -> None:
    """For any value (LDAP metacharacters, NUL, quotes, unicode), the template gives exactly the general
    path's LDAP filter, exactness and resolved-ids answer."""
    asyncio.run(_template_agrees(value))


def _answer(check: Callable[[dict[str, Any]], bool], resource: dict[str, Any]) -> Any:
    try:
        return check(resource)
    except ScimError as error:  # the same refusal either way (an ordering meeting a boolean value)
        return error.detail


async def _prepared_both_ways(text: str, resources: list[dict[str, Any]]) -> None:
    handler = ScimHandler(MemoryDirectory(), PROFILE)
    refs = handler.refs
    for mapping in PROFILE.resources:
        lister = Lister(handler)
        for _ in range(2):  # the first makes the template, the second uses it
            prepared = await lister._prepare(mapping, text)
        node = sf.parse_filter(text)
        scimeval.check(node)
        found = await translation(node, mapping, refs)
        assert prepared.ldap_filter == found.ldap_filter
        if found.exact:
            assert prepared.test is None
            continue
        assert prepared.test is not None
        for resource in resources:
            assert _answer(prepared.test, resource) == _answer(partial(scimeval.holds, node), resource)


@settings(max_examples=60)
@given(
    path=st.sampled_from(["userName", "title", "emails", "emails.value", "name.givenName", "displayName", "id"]),
    op=st.sampled_from(OPS),
    value=st.one_of(AWKWARD, st.text(alphabet=st.sampled_from([*"aA*()é\u017f 0-:T"]), max_size=12)),
    stored=st.lists(AWKWARD, max_size=3),
)
def test_a_lookup_prepared_by_template_is_prepared_as_by_the_general_path(
    path: str, op: str, value: str, stored: list[str]
) -> None:
    """``attr op "value"`` prepared from a template has the general path's node, LDAP filter, exactness
    and re-check answers."""
    values = [*stored, value, "2020-01-01T00:00:00Z"]
    resources: list[dict[str, Any]] = [
        {"userName": v, "title": v, "displayName": v, "emails": [{"value": v}], "name": {"givenName": v}, "id": v}
        for v in values
    ]
    resources.append({"userName": None, "emails": [{"value": True}], "title": 3})
    asyncio.run(_prepared_both_ways(f'{path} {op} "{_json_escape(value)}"', resources))
