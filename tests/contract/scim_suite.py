"""The SCIM behaviour suite: what the agent's SCIM layer must do over any directory, written once.

What it is
    ``ScimSuite`` is an abstract test class. A subclass names a directory backend and a mapping
    profile and inherits every case: discovery, GET by id, the full filter grammar (checked against
    the exact expected set), index and cursor paging, projection, POST/PUT/PATCH/DELETE, member
    changes, the ``/Changes`` delta feed, ``POST /.search`` and bad input (malformed bodies, unknown
    paths and methods, invalid filters, filter injection, oversize counts). Every case drives
    ``ScimHandler.handle`` with a ``ScimOperation`` and checks the ``Result`` status and body.

How to subclass (``tests/unit/test_scim_memory.py`` is the smallest example)
    ::

        class TestSlapdScim(ScimSuite):
            profile_name = "openldap"

            @pytest.fixture
            async def directory(self) -> AsyncIterator[Directory]:
                # reach the server or call tests.conftest.server_missing(...)
                async with LdapDirectory(settings) as directory:
                    yield directory                     # opened; the containers of the profile exist

    Test data is made through SCIM POST itself, so a case works on any backend that accepts it.

Guarantees
    Each case keeps its data in its own namespace (a unique ``userName``/``displayName`` prefix),
    scopes every list it checks to that namespace, and deletes what it created, so the suite can
    run against a shared real server that holds other entries. No case measures wall-clock time.
"""

from __future__ import annotations

import abc
import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

import pytest

from agent.config import ScimSection
from agent.scim.handler import Result, ScimHandler
from agent.scim.profile import CORE_GROUP, CORE_USER, ENTERPRISE, LDAP_ENTRY, Profile, load_profile
from plugins import dn as dnlib
from plugins.directory import Directory, Modification, ModOp
from protocol import scimeval
from protocol import scimfilter as sf
from protocol.envelope import ScimOperation
from protocol.errors import ScimError

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def patch_body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


def member_ids(group: dict[str, Any]) -> set[str]:
    return {m["value"] for m in group.get("members", [])}


# ---- generated filters: what a list selects is what evaluating the filter on each resource selects ----

# LDAP filter metacharacters, a backslash, runs of spaces (which LDAP matching partly ignores), case, and
# characters whose case folding differs between Unicode's full folding and simple lower-casing.
_AWKWARD = [*"aAbB*()\\ éÉß", "\u017f", "  "]
_ATTRIBUTES = [
    "userName",
    "title",
    "displayName",
    "name.givenName",
    "emails",
    "emails.value",
    f"{ENTERPRISE}:department",
    "nickName",  # not mapped
]
_OPERATORS = sorted(sf.COMPARE_OPS)  # sorted: a frozenset iterates in an order that changes per process


def _awkward(rng: random.Random, shortest: int, longest: int) -> str:
    return "".join(rng.choice(_AWKWARD) for _ in range(rng.randint(shortest, longest)))


def _comparison(rng: random.Random, attributes: list[str], seen: list[tuple[str, str]]) -> str:
    attribute = rng.choice(attributes)
    if rng.random() < 0.2:
        return f"{attribute} pr"
    text = _awkward(rng, 0, 4)
    if seen and rng.random() < 0.6:  # a piece of a stored value, compared with its own attribute: often a match
        source, value = rng.choice(seen)
        attribute = source if "value" not in attributes else attribute  # in a value path, keep its own names
        start = 0 if rng.random() < 0.3 else rng.randint(0, len(value))
        text = value[start : len(value) if rng.random() < 0.5 else rng.randint(start, len(value))]
    return f"{attribute} {rng.choice(_OPERATORS)} {json.dumps(text, ensure_ascii=False)}"


def generated_filter(rng: random.Random, seen: list[tuple[str, str]], depth: int = 0) -> str:
    """A SCIM filter over the user attributes above (values new or cut from ``seen``): comparisons and
    presence, value paths on emails, not/and/or up to two levels deep."""
    kind = rng.random()
    if depth >= 2 or kind < 0.55:
        if kind < 0.1:
            value_path = ["type", "value"]
            return f"emails[{_comparison(rng, value_path, seen)} and {_comparison(rng, value_path, seen)}]"
        return _comparison(rng, _ATTRIBUTES, seen)
    if kind < 0.65:
        return f"not ({generated_filter(rng, seen, depth + 1)})"
    operator = rng.choice(["and", "or"])
    return f"({generated_filter(rng, seen, depth + 1)}) {operator} ({generated_filter(rng, seen, depth + 1)})"


def _stored(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """The generated attributes' values of a resource, by attribute path, for filters to cut values from."""
    pairs = [(name, resource[name]) for name in ("title", "displayName") if isinstance(resource.get(name), str)]
    pairs += [("name.givenName", resource["name"]["givenName"])] if "givenName" in resource.get("name", {}) else []
    pairs += [("emails.value", email["value"]) for email in resource.get("emails", [])]
    department = resource.get(ENTERPRISE, {}).get("department")
    return pairs + ([(f"{ENTERPRISE}:department", department)] if isinstance(department, str) else [])


def generated_user(rng: random.Random) -> dict[str, Any]:
    """SCIM attributes for ``Scim.user``: each present or not, with awkward text (mail ASCII: IA5 on slapd)."""
    attributes: dict[str, Any] = {}
    for key in ("title", "displayName", "givenName", "email", "department"):
        text = _awkward(rng, 1, 5)
        if rng.random() < 0.3 or not text.strip():
            continue
        if key == "givenName":
            attributes["name"] = {"givenName": text}
        elif key == "email":
            ascii_only = text.encode("ascii", "ignore").decode().strip() or "a"
            attributes["emails"] = [{"type": rng.choice(["work", "home"]), "value": ascii_only}]
        elif key == "department":
            attributes["enterprise"] = {"department": text}
        else:
            attributes[key] = text
    return attributes


class Scim:
    """One case's view of the SCIM layer: a handler, a namespace, and what the case created."""

    def __init__(self, directory: Directory, profile: Profile, settings: ScimSection | None = None) -> None:
        self.directory = directory
        self.profile = profile
        self.handler = ScimHandler(directory, profile, settings)
        self.ns = f"t{uuid.uuid4().hex[:8]}-"
        self.created: list[tuple[str, str]] = []  # (endpoint, id), in creation order

    def with_settings(self, settings: ScimSection) -> ScimHandler:
        """Another handler over the same directory with different SCIM settings."""
        return ScimHandler(self.directory, self.profile, settings)

    async def call(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None) -> Result:
        return await self.handler.handle(ScimOperation(method, path, query or {}, body))

    async def ok(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None) -> Any:
        """The body of a call that must succeed (2xx), failing the case with the error otherwise."""
        result = await self.call(method, path, query, body)
        assert 200 <= result.status < 300, f"{method} {path} -> {result.status}: {result.body}"
        return result.body

    # ---- test data ----------------------------------------------------------------------------

    async def user(self, local: str, **attributes: Any) -> dict[str, Any]:
        """Create user ``<ns><local>`` with the given SCIM attributes (``enterprise`` → the extension)."""
        body: dict[str, Any] = {"schemas": [CORE_USER], "userName": self.ns + local}
        extension = attributes.pop("enterprise", None)
        body.update(attributes)
        if extension:
            body["schemas"].append(ENTERPRISE)
            body[ENTERPRISE] = extension
        created: dict[str, Any] = await self.ok("POST", "/Users", body=body)
        self.created.append(("/Users", created["id"]))
        return created

    async def group(self, local: str, members: Iterable[str] = ()) -> dict[str, Any]:
        """Create group ``<ns><local>`` with the given member ids."""
        body = {"schemas": [CORE_GROUP], "displayName": self.ns + local, "members": [{"value": m} for m in members]}
        created: dict[str, Any] = await self.ok("POST", "/Groups", body=body)
        self.created.append(("/Groups", created["id"]))
        return created

    def scoped(self, endpoint: str, scim_filter: str | None) -> str:
        """``scim_filter`` limited to this case's namespace."""
        name = "userName" if endpoint == "/Users" else "displayName"
        scope = f'{name} sw "{self.ns}"'
        return scope if scim_filter is None else f"{scope} and ({scim_filter})"

    async def listed(self, endpoint: str, scim_filter: str | None = None, **query: str) -> dict[str, Any]:
        """The ListResponse for ``scim_filter`` within the namespace."""
        body: dict[str, Any] = await self.ok("GET", endpoint, {"filter": self.scoped(endpoint, scim_filter), **query})
        return body

    async def cleanup(self) -> None:
        """Delete everything the case created (groups first); already-deleted resources are fine."""
        newest_first = self.created[::-1]
        for endpoint, scim_id in sorted(newest_first, key=lambda item: item[0] != "/Groups"):
            result = await self.call("DELETE", f"{endpoint}/{scim_id}")
            assert result.status in {204, 404}, result.body


def assert_error(result: Result, status: int, scim_type: str | None = None) -> None:
    """``result`` is an RFC 7644 error with this status (and scimType, when given)."""
    assert result.status == status, result.body
    assert result.body["schemas"] == [ERROR_SCHEMA]
    assert result.body["status"] == str(status)
    assert isinstance(result.body.get("detail"), str)
    assert result.body["detail"]
    if scim_type is not None:
        assert result.body.get("scimType") == scim_type, result.body


# Filters over the users made by ``people``: (filter, the local names it selects). ``{ns}`` is the
# namespace, ``{E}`` the enterprise URN and ``{name}`` the id of that user.
USER_FILTERS: list[tuple[str, set[str]]] = [
    ('userName eq "{ns}ann"', {"ann"}),
    ('userName eq "{NS}ANN"', {"ann"}),
    ('userName ne "{ns}ann"', {"ben", "cat", "dan"}),
    ('title co "engineer"', {"ann", "ben"}),
    ('title sw "Senior"', {"ben"}),
    ('title ew "ER"', {"ann", "ben", "dan"}),
    ("title pr", {"ann", "ben", "dan"}),
    ("title eq null", {"cat"}),
    ('title gt "Manager"', {"ben"}),
    ('title ge "Manager"', {"ben", "dan"}),
    ('title lt "Manager"', {"ann"}),
    ('title le "Manager"', {"ann", "dan"}),
    ('userName gt "{ns}ben"', {"cat", "dan"}),
    ('userName le "{ns}ben"', {"ann", "ben"}),
    ('title co "Engineer" and emails co "@y"', {"ben"}),
    ('title eq "Manager" or name.givenName eq "Cat"', {"cat", "dan"}),
    ('(title eq "Manager" or title eq "Engineer") and not (emails co "@y")', {"ann", "dan"}),
    ('not (title eq "Engineer" or title eq "Manager")', {"ben", "cat"}),
    ("not (title pr)", {"cat"}),
    ('emails[type eq "work" and value co "@x"]', {"ann", "dan"}),
    ('emails[type eq "work" and not (value co "@x")]', {"ben"}),
    ('emails[type eq "home"]', set()),
    ('emails.value ew ".example"', {"ann", "ben", "dan"}),
    ('emails co "@X.example"', {"ann", "dan"}),
    ('phoneNumbers[type eq "mobile"]', {"ann"}),
    ('phoneNumbers[type eq "mobile" and value sw "+1"]', {"ann"}),
    ('name.familyName eq "Beta"', {"ben"}),
    ('name.givenName pr and not (name.givenName eq "ann")', {"ben", "cat", "dan"}),
    ('{E}:department eq "Sales"', {"ann", "cat"}),
    ('{E}:department ne "Sales"', {"ben", "dan"}),
    ('{E}:employeeNumber eq "200"', {"ben"}),
    ('{E}:manager.value eq "{ann}"', {"ben"}),
    ("{E}:manager pr", {"ben"}),
    ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "{ns}ann"', {"ann"}),
    ('id eq "{ann}"', {"ann"}),
    ('id eq "{ann}" or id eq "{dan}"', {"ann", "dan"}),
    ('id ne "{ann}"', {"ben", "cat", "dan"}),
    ("id pr", {"ann", "ben", "cat", "dan"}),
    ('meta.resourceType eq "User"', {"ann", "ben", "cat", "dan"}),
    ('meta.resourceType eq "Group"', set()),
    ('meta.resourceType eq "user"', set()),  # caseExact (RFC 7643 §3.1)
    ('meta.location ew "{ann}"', {"ann"}),  # made when shown, not stored: decided by evaluation
    ('not (meta.location ew "{ann}")', {"ben", "cat", "dan"}),
    ('schemas eq "urn:ietf:params:scim:schemas:core:2.0:User"', {"ann", "ben", "cat", "dan"}),
    ('displayName co "(the) *star*"', {"cat"}),
    ('displayName co "\\\\"', {"cat"}),
    ('displayName eq "Cat (the) *star* \\\\ back"', {"cat"}),
    ('title eq "*"', set()),
    ('nickName eq "x"', set()),
    ('nickName pr or userName eq "{ns}dan"', {"dan"}),
]

GROUP_FILTERS: list[tuple[str, set[str]]] = [
    ('members[value eq "{ann}"]', {"eng"}),
    ('members[value eq "{dan}"]', {"mgr"}),
    ('members[value eq "{ann}" or value eq "{dan}"]', {"eng", "mgr"}),
    ('members.value eq "{ben}"', {"eng"}),
    ('members[value eq "{cat}"]', set()),
    ('members[value eq "no-such-id"]', set()),
    ("members pr", {"eng", "mgr"}),
    ('displayName eq "{ns}eng"', {"eng"}),
    ('displayName ne "{ns}eng"', {"mgr"}),
    ('meta.resourceType eq "Group"', {"eng", "mgr"}),
    ('id eq "{eng}"', {"eng"}),
    ('members[type eq "User"]', {"eng", "mgr"}),
    ('members.$ref ew "{ben}"', {"eng"}),
]

# Filters that must be refused with 400 invalidFilter before anything is searched.
INVALID_FILTERS = [
    "userName eq",
    'userName xx "a"',
    '(userName eq "a"',
    'userName eq "a")',
    "title gt true",
    "title lt null",
    "userName co 5",
    'emails[type eq "work"',
    'emails[type eq "work"]]',
    'userName eq "unterminated',
    'and userName eq "a"',
    '"a" eq userName',
    'userName eq "\\ud800"',  # an escaped lone surrogate: no character, no directory holds it
    'emails[value co "a\\udfff"]',
]


class ScimSuite(abc.ABC):
    """Behaviour every directory must show through the SCIM layer; subclass it once per backend."""

    #: The mapping profile the backend uses: "openldap" or "ad".
    profile_name: ClassVar[str] = "openldap"

    # ---- what a subclass provides -------------------------------------------------------------

    @abc.abstractmethod
    def directory(self) -> Any:
        """A pytest fixture yielding an opened ``Directory`` in which the profile's containers exist."""

    # ---- fixtures -----------------------------------------------------------------------------

    @pytest.fixture
    def profile(self) -> Profile:
        return load_profile(self.profile_name)

    @pytest.fixture
    async def scim(self, directory: Directory, profile: Profile) -> AsyncIterator[Scim]:
        session = Scim(directory, profile)
        try:
            yield session
        finally:
            await session.cleanup()

    @pytest.fixture
    async def people(self, scim: Scim) -> dict[str, dict[str, Any]]:
        """Four users with varied attributes, and groups eng (ann, ben) and mgr (dan), keyed by local name."""
        ann = await scim.user(
            "ann",
            name={"givenName": "Ann", "familyName": "Alpha"},
            displayName="Ann Alpha",
            title="Engineer",
            emails=[{"type": "work", "value": "ann@x.example"}],
            phoneNumbers=[{"type": "mobile", "value": "+1 555 0101"}],
            enterprise={"department": "Sales", "employeeNumber": "100"},
        )
        ben = await scim.user(
            "ben",
            name={"givenName": "Ben", "familyName": "Beta"},
            title="Senior Engineer",
            emails=[{"type": "work", "value": "ben@y.example"}],
            enterprise={"department": "R&D", "employeeNumber": "200", "manager": {"value": ann["id"]}},
        )
        cat = await scim.user(
            "cat",
            name={"givenName": "Cat", "familyName": "Gamma"},
            displayName="Cat (the) *star* \\ back",
            enterprise={"department": "Sales"},
        )
        dan = await scim.user(
            "dan",
            name={"givenName": "Dan", "familyName": "Delta"},
            title="Manager",
            emails=[{"type": "work", "value": "dan@x.example"}],
        )
        eng = await scim.group("eng", [ann["id"], ben["id"]])
        mgr = await scim.group("mgr", [dan["id"]])
        return {"ann": ann, "ben": ben, "cat": cat, "dan": dan, "eng": eng, "mgr": mgr}

    @staticmethod
    def _fill(template: str, scim: Scim, people: dict[str, dict[str, Any]]) -> str:
        ids = {name: resource["id"] for name, resource in people.items()}
        return template.format(ns=scim.ns, NS=scim.ns.upper(), E=ENTERPRISE, **ids)

    # ---- discovery ----------------------------------------------------------------------------

    async def test_service_provider_config(self, scim: Scim) -> None:
        """/ServiceProviderConfig announces PATCH and filtering with the page-size limit, and no bulk or sort."""
        body = await scim.ok("GET", "/ServiceProviderConfig")
        assert "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig" in body["schemas"]
        assert body["patch"]["supported"] is True
        assert body["filter"]["supported"] is True
        assert body["filter"]["maxResults"] == ScimSection().max_page_size
        assert body["bulk"]["supported"] is False
        assert body["sort"]["supported"] is False

    async def test_resource_types(self, scim: Scim) -> None:
        """/ResourceTypes lists User (with the enterprise extension) and Group at their endpoints."""
        body = await scim.ok("GET", "/ResourceTypes")
        assert body["schemas"] == [LIST_SCHEMA]
        by_id = {r["id"]: r for r in body["Resources"]}
        assert set(by_id) == {"User", "Group"}
        assert body["totalResults"] == 2
        assert by_id["User"]["endpoint"] == "/Users"
        assert by_id["User"]["schema"] == CORE_USER
        assert [e["schema"] for e in by_id["User"]["schemaExtensions"]] == [ENTERPRISE]
        assert by_id["Group"]["endpoint"] == "/Groups"
        one = await scim.ok("GET", "/ResourceTypes/Group")
        assert one["id"] == "Group"

    async def test_schemas(self, scim: Scim) -> None:
        """/Schemas lists the User, Group and enterprise schemas, each also readable by its id."""
        body = await scim.ok("GET", "/Schemas")
        ids = {s["id"] for s in body["Resources"]}
        assert ids == {CORE_USER, CORE_GROUP, ENTERPRISE}
        user = await scim.ok("GET", f"/Schemas/{CORE_USER}")
        assert user["id"] == CORE_USER
        assert "userName" in {a["name"] for a in user["attributes"]}
        assert_error(await scim.call("GET", "/Schemas/urn:nope"), 404)
        assert_error(await scim.call("GET", "/ResourceTypes/Printer"), 404)

    @pytest.mark.parametrize("path", ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas"])
    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
    async def test_discovery_is_read_only(self, scim: Scim, path: str, method: str) -> None:
        """Writing to a discovery endpoint is 405."""
        assert_error(await scim.call(method, path, body={}), 405)

    # ---- reads --------------------------------------------------------------------------------

    async def test_get_by_id(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """GET /Users/{id} returns the resource as POST returned it, with meta pointing at itself."""
        ann = people["ann"]
        body = await scim.ok("GET", f"/Users/{ann['id']}")
        assert body == ann
        assert body["meta"]["resourceType"] == "User"
        assert body["meta"]["location"].endswith(f"/Users/{ann['id']}")
        assert body[ENTERPRISE]["department"] == "Sales"
        group = await scim.ok("GET", f"/Groups/{people['eng']['id']}")
        assert member_ids(group) == {ann["id"], people["ben"]["id"]}

    async def test_get_unknown_id_is_404(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """An unknown id, an id of the other resource type and a malformed id are all 404."""
        assert_error(await scim.call("GET", f"/Users/{uuid.uuid4()}"), 404)
        assert_error(await scim.call("GET", f"/Users/{people['eng']['id']}"), 404)
        assert_error(await scim.call("GET", f"/Groups/{people['ann']['id']}"), 404)
        assert_error(await scim.call("GET", "/Users/not-a-uuid*)(x=*"), 404)

    @pytest.mark.parametrize(("template", "expected"), USER_FILTERS, ids=[f for f, _ in USER_FILTERS])
    async def test_user_filter(
        self, scim: Scim, people: dict[str, dict[str, Any]], template: str, expected: set[str]
    ) -> None:
        """A user filter selects exactly the expected users, and totalResults counts them."""
        body = await scim.listed("/Users", self._fill(template, scim, people))
        assert {r["id"] for r in body["Resources"]} == {people[name]["id"] for name in expected}
        assert body["totalResults"] == len(expected)
        assert body["itemsPerPage"] == len(expected)

    @pytest.mark.parametrize(("template", "expected"), GROUP_FILTERS, ids=[f for f, _ in GROUP_FILTERS])
    async def test_group_filter(
        self, scim: Scim, people: dict[str, dict[str, Any]], template: str, expected: set[str]
    ) -> None:
        """A group filter selects exactly the expected groups, and totalResults counts them."""
        body = await scim.listed("/Groups", self._fill(template, scim, people))
        assert {r["id"] for r in body["Resources"]} == {people[name]["id"] for name in expected}
        assert body["totalResults"] == len(expected)

    async def test_active_filter(self, scim: Scim, profile: Profile) -> None:
        """Where the profile maps ``active``, ``active eq true/false`` selects enabled and disabled users."""
        if profile.users.find("active") is None:
            pytest.skip(f"profile {profile.name} does not map 'active'")
        on = await scim.user("on", active=True)
        off = await scim.user("off", active=False)
        assert off["active"] is False
        assert on["active"] is True
        enabled = await scim.listed("/Users", "active eq true")
        disabled = await scim.listed("/Users", "active eq false")
        assert [r["id"] for r in enabled["Resources"]] == [on["id"]]
        assert [r["id"] for r in disabled["Resources"]] == [off["id"]]

    async def test_unfiltered_list_covers_every_type_member(
        self, scim: Scim, people: dict[str, dict[str, Any]]
    ) -> None:
        """A list without a filter returns users only (never groups), totalResults counting all of them."""
        body = await scim.ok("GET", "/Users", {"count": "1"})
        assert body["totalResults"] >= 4
        assert body["itemsPerPage"] == 1
        assert all(r["meta"]["resourceType"] == "User" for r in body["Resources"])

    # ---- paging -------------------------------------------------------------------------------

    @pytest.fixture
    async def five(self, scim: Scim) -> list[str]:
        """Five users in the namespace; their ids."""
        return [(await scim.user(f"p{i}"))["id"] for i in range(5)]

    async def test_index_paging_windows(self, scim: Scim, five: list[str]) -> None:
        """startIndex/count windows are consecutive, cover every match once, and totalResults stays whole."""
        seen: list[str] = []
        for start in (1, 3, 5):
            body = await scim.listed("/Users", None, startIndex=str(start), count="2")
            assert body["totalResults"] == 5
            assert body["startIndex"] == start
            assert body["itemsPerPage"] == len(body["Resources"]) == (2 if start < 5 else 1)
            seen.extend(r["id"] for r in body["Resources"])
        assert sorted(seen) == sorted(five)

    async def test_index_paging_edges(self, scim: Scim, five: list[str]) -> None:
        """count=0 returns only the total; startIndex past the end returns nothing; startIndex < 1 means 1."""
        body = await scim.listed("/Users", None, count="0")
        assert (body["totalResults"], body["itemsPerPage"], body["Resources"]) == (5, 0, [])
        body = await scim.listed("/Users", None, startIndex="6", count="10")
        assert (body["totalResults"], body["itemsPerPage"], body["Resources"]) == (5, 0, [])
        body = await scim.listed("/Users", None, startIndex="0", count="10")
        assert body["startIndex"] == 1
        assert sorted(r["id"] for r in body["Resources"]) == sorted(five)
        body = await scim.listed("/Users", None, count="-3")
        assert (body["totalResults"], body["itemsPerPage"]) == (5, 0)

    async def test_paging_parameters_must_be_integers(self, scim: Scim) -> None:
        """A non-integer startIndex or count is 400 invalidValue."""
        assert_error(await scim.call("GET", "/Users", {"count": "ten"}), 400, "invalidValue")
        assert_error(await scim.call("GET", "/Users", {"startIndex": "1.5"}), 400, "invalidValue")

    async def test_oversize_count_is_clamped(self, scim: Scim, five: list[str]) -> None:
        """A count above max_page_size returns at most max_page_size resources (the total stays whole)."""
        handler = scim.with_settings(ScimSection(max_page_size=3))
        query = {"filter": scim.scoped("/Users", None), "count": "1000000"}
        result = await handler.handle(ScimOperation("GET", "/Users", query))
        assert result.status == 200
        assert result.body["totalResults"] == 5
        assert result.body["itemsPerPage"] == len(result.body["Resources"]) == 3

    async def test_cursor_paging_returns_everything_once(self, scim: Scim, five: list[str]) -> None:
        """Following nextCursor from an empty cursor until it is absent yields every match exactly once."""
        seen: list[str] = []
        body = await scim.listed("/Users", None, cursor="", count="2")
        pages = 1
        while True:
            assert body["itemsPerPage"] == len(body["Resources"]) <= 2
            seen.extend(r["id"] for r in body["Resources"])
            if "nextCursor" not in body:
                break
            body = await scim.listed("/Users", None, cursor=body["nextCursor"], count="2")
            pages += 1
            assert pages <= 5, "the cursor never ended"
        assert sorted(seen) == sorted(five)
        assert len(seen) == len(set(seen))

    async def test_cursor_exactly_full_last_page(self, scim: Scim, five: list[str]) -> None:
        """When the last page is exactly full, no nextCursor points at an empty page."""
        body = await scim.listed("/Users", None, cursor="", count="5")
        assert len(body["Resources"]) == 5
        assert "nextCursor" not in body

    async def test_unknown_cursor_is_400(self, scim: Scim, five: list[str]) -> None:
        """An unknown cursor, and a cursor already used to the end, are refused with 400."""
        assert_error(await scim.call("GET", "/Users", {"cursor": "no-such-cursor"}), 400, "invalidCursor")
        body = await scim.listed("/Users", None, cursor="", count="4")
        token = body["nextCursor"]
        last = await scim.listed("/Users", None, cursor=token, count="4")
        assert "nextCursor" not in last
        assert_error(await scim.call("GET", "/Users", {"cursor": token}), 400, "invalidCursor")

    async def test_cursor_of_users_is_not_a_group_cursor(self, scim: Scim, five: list[str]) -> None:
        """A cursor opened on /Users cannot continue a /Groups listing."""
        body = await scim.listed("/Users", None, cursor="", count="1")
        assert_error(await scim.call("GET", "/Groups", {"cursor": body["nextCursor"]}), 400, "invalidCursor")

    # ---- projection ---------------------------------------------------------------------------

    async def test_attributes_projection(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """``attributes`` keeps only the named attributes (and id, schemas), sub-attributes and URN paths included."""
        ann_id = people["ann"]["id"]
        body = await scim.ok("GET", f"/Users/{ann_id}", {"attributes": "userName"})
        assert set(body) == {"schemas", "id", "userName"}
        body = await scim.ok("GET", f"/Users/{ann_id}", {"attributes": "name.givenName,EMAILS"})
        assert body["name"] == {"givenName": "Ann"}
        assert body["emails"][0]["value"] == "ann@x.example"
        assert "title" not in body
        body = await scim.ok("GET", f"/Users/{ann_id}", {"attributes": f"{ENTERPRISE}:department"})
        assert body[ENTERPRISE] == {"department": "Sales"}
        assert "userName" not in body

    async def test_excluded_attributes(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """``excludedAttributes`` drops the named attributes but never id or schemas."""
        body = await scim.ok(
            "GET", f"/Users/{people['ann']['id']}", {"excludedAttributes": "emails,meta,id,name.familyName"}
        )
        assert "emails" not in body
        assert "meta" not in body
        assert body["id"] == people["ann"]["id"]
        assert body["name"] == {k: v for k, v in people["ann"]["name"].items() if k != "familyName"}
        assert body["title"] == "Engineer"

    async def test_projection_applies_to_lists(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """A list request projects every resource it returns."""
        body = await scim.listed("/Groups", None, excludedAttributes="members")
        assert body["totalResults"] == 2
        assert all("members" not in r and r["displayName"].startswith(scim.ns) for r in body["Resources"])

    async def test_invalid_attribute_path_is_400(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """An ``attributes`` value that is not an attribute path is 400 invalidPath."""
        result = await scim.call("GET", f"/Users/{people['ann']['id']}", {"attributes": "user)Name"})
        assert_error(result, 400, "invalidPath")

    # ---- POST ---------------------------------------------------------------------------------

    async def test_create_user(self, scim: Scim) -> None:
        """POST /Users is 201 with a new id, and the user is then readable and findable."""
        created = await scim.user("new", title="Tester", emails=[{"type": "work", "value": "new@x.example"}])
        assert created["id"]
        assert created["userName"] == f"{scim.ns}new"
        assert created["title"] == "Tester"
        assert created["meta"]["resourceType"] == "User"
        assert await scim.ok("GET", f"/Users/{created['id']}") == created
        found = await scim.listed("/Users", f'userName eq "{scim.ns}new"')
        assert [r["id"] for r in found["Resources"]] == [created["id"]]

    async def test_create_status_is_201(self, scim: Scim) -> None:
        """POST answers 201 Created (not 200)."""
        body = {"schemas": [CORE_USER], "userName": f"{scim.ns}status"}
        result = await scim.call("POST", "/Users", body=body)
        assert result.status == 201, result.body
        scim.created.append(("/Users", result.body["id"]))

    async def test_duplicate_user_name_is_409(self, scim: Scim) -> None:
        """A second user with the same userName, in any case, is 409 uniqueness; so is a duplicate group name."""
        await scim.user("dup")
        for name in (f"{scim.ns}dup", f"{scim.ns}DUP".upper()):
            result = await scim.call("POST", "/Users", body={"schemas": [CORE_USER], "userName": name})
            assert_error(result, 409, "uniqueness")
        await scim.group("gdup")
        result = await scim.call("POST", "/Groups", body={"schemas": [CORE_GROUP], "displayName": f"{scim.ns}gdup"})
        assert_error(result, 409, "uniqueness")

    @pytest.mark.parametrize("user_name", [None, "", "   ", 42])
    async def test_create_without_user_name_is_400(self, scim: Scim, user_name: Any) -> None:
        """A user without a usable userName is 400 and nothing is created."""
        body: dict[str, Any] = {"schemas": [CORE_USER], "title": f"{scim.ns}nameless"}
        if user_name is not None:
            body["userName"] = user_name
        assert_error(await scim.call("POST", "/Users", body=body), 400, "invalidValue")
        found = await scim.ok("GET", "/Users", {"filter": f'title eq "{scim.ns}nameless"'})
        assert found["totalResults"] == 0

    @pytest.mark.parametrize("schemas", [None, [], [CORE_GROUP], "urn:ietf:params:scim:schemas:core:2.0:User"])
    async def test_create_with_wrong_schemas_is_400(self, scim: Scim, schemas: Any) -> None:
        """A body whose ``schemas`` does not list the resource's schema is 400 invalidSyntax."""
        body: dict[str, Any] = {"userName": f"{scim.ns}wrong"}
        if schemas is not None:
            body["schemas"] = schemas
        assert_error(await scim.call("POST", "/Users", body=body), 400, "invalidSyntax")

    async def test_create_with_unknown_member_is_400(self, scim: Scim) -> None:
        """A group whose member id names nothing is 400 invalidValue."""
        body = {"schemas": [CORE_GROUP], "displayName": f"{scim.ns}ghost", "members": [{"value": str(uuid.uuid4())}]}
        assert_error(await scim.call("POST", "/Groups", body=body), 400, "invalidValue")

    async def test_create_with_a_value_given_twice_writes_it_once(
        self, scim: Scim, people: dict[str, dict[str, Any]]
    ) -> None:
        """A member listed twice, or an email given again in another case, is one value (the directory would
        refuse the second as already there), and a non-string email type is 400 invalidValue."""
        ann = people["ann"]["id"]
        body = {
            "schemas": [CORE_GROUP],
            "displayName": f"{scim.ns}twice",
            "members": [{"value": ann}, {"value": ann}],
        }
        group = await scim.ok("POST", "/Groups", body=body)
        scim.created.append(("/Groups", group["id"]))
        assert [m["value"] for m in group["members"]] == [ann]
        emails = [{"value": "Twice@x.example", "type": "work"}, {"value": "twice@X.example", "type": "work"}]
        user = await scim.user("mailed", emails=emails)
        assert [e["value"].lower() for e in user["emails"]] == ["twice@x.example"]
        body = {"schemas": [CORE_USER], "userName": f"{scim.ns}typed", "emails": [{"value": "a@x", "type": 5}]}
        assert_error(await scim.call("POST", "/Users", body=body), 400, "invalidValue")

    # ---- PUT ----------------------------------------------------------------------------------

    async def test_put_replaces(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """PUT replaces the resource: given attributes change and omitted writable ones are cleared."""
        ann = people["ann"]
        body = {
            "schemas": [CORE_USER],
            "id": ann["id"],
            "userName": ann["userName"],
            "name": {"givenName": "Anne", "familyName": "Alpha"},
            "title": "Architect",
        }
        replaced = await scim.ok("PUT", f"/Users/{ann['id']}", body=body)
        assert replaced["id"] == ann["id"]
        assert replaced["title"] == "Architect"
        assert replaced["name"]["givenName"] == "Anne"
        assert "emails" not in replaced
        assert "phoneNumbers" not in replaced
        assert await scim.ok("GET", f"/Users/{ann['id']}") == replaced

    async def test_put_keeps_required_attributes(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """A PUT that omits the name keeps the attributes the structural class requires (person: cn, sn)."""
        ann = people["ann"]
        replaced = await scim.ok(
            "PUT", f"/Users/{ann['id']}", body={"schemas": [CORE_USER], "userName": ann["userName"]}
        )
        assert replaced["userName"] == ann["userName"]
        wanted = ["*", "userAccountControl", scim.profile.users.id_attribute]
        entry = await scim.handler.refs.find(scim.profile.users, ann["id"], wanted)
        assert entry is not None
        classes = {str(c).lower() for c in entry.get("objectClass")}
        # OpenLDAP's core.schema person MUSTs cn and sn; an Active Directory user cn (its RDN) and a
        # userAccountControl, which holds more than 'active' and cannot be removed.
        required = ("cn", "userAccountControl") if "user" in classes else ("cn", "sn") if "person" in classes else ()
        assert all(entry.get(name) for name in required), entry.attributes

    async def test_put_renames(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """A PUT that changes userName renames the user: same id, found under the new name only, and
        still found as a member by id (a filter on a member's id names its DN, which the rename changed)."""
        ben = people["ben"]
        by_member = f'members[value eq "{ben["id"]}"]'
        assert [r["id"] for r in (await scim.listed("/Groups", by_member))["Resources"]] == [people["eng"]["id"]]
        body = {**ben, "userName": f"{scim.ns}benjamin"}
        renamed = await scim.ok("PUT", f"/Users/{ben['id']}", body=body)
        assert renamed["id"] == ben["id"]
        assert renamed["userName"] == f"{scim.ns}benjamin"
        assert renamed["title"] == "Senior Engineer"
        assert (await scim.listed("/Users", f'userName eq "{scim.ns}ben"'))["totalResults"] == 0
        found = await scim.listed("/Users", f'userName eq "{scim.ns}benjamin"')
        assert [r["id"] for r in found["Resources"]] == [ben["id"]]
        group = await scim.ok("GET", f"/Groups/{people['eng']['id']}")
        assert ben["id"] in member_ids(group)
        assert [r["id"] for r in (await scim.listed("/Groups", by_member))["Resources"]] == [people["eng"]["id"]]

    async def test_an_rdn_the_administrator_chose_survives_patches(
        self, scim: Scim, people: dict[str, dict[str, Any]]
    ) -> None:
        """An AD user named apart from its userName (``CN=Ann Alpha``) is not renamed by a PATCH.

        Neither a PATCH of the title nor one of userName moves it: only an RDN made from userName
        follows userName.
        """
        if scim.profile.users.rdn_attribute.lower() != "cn":
            pytest.skip("in this profile the RDN is the userName attribute itself")
        ann = people["ann"]
        entry = await scim.handler.refs.find(scim.profile.users, ann["id"], [scim.profile.users.id_attribute])
        assert entry is not None
        chosen = f"{scim.ns}Ann Alpha"
        dn = await scim.directory.rename(entry.dn, f"cn={chosen}")
        title = patch_body({"op": "replace", "path": "title", "value": "Principal"})
        assert (await scim.ok("PATCH", f"/Users/{ann['id']}", body=title))["title"] == "Principal"
        moved = await scim.handler.refs.find(scim.profile.users, ann["id"], [scim.profile.users.id_attribute])
        assert moved is not None
        assert dnlib.normalize(moved.dn) == dnlib.normalize(dn)
        renamed = patch_body({"op": "replace", "path": "userName", "value": f"{scim.ns}ann.alpha"})
        patched = await scim.ok("PATCH", f"/Users/{ann['id']}", body=renamed)
        assert patched["userName"] == f"{scim.ns}ann.alpha"
        kept = await scim.handler.refs.find(scim.profile.users, ann["id"], [scim.profile.users.id_attribute])
        assert kept is not None
        assert dnlib.normalize(kept.dn) == dnlib.normalize(dn)

    async def test_put_rename_onto_taken_name_is_409(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """Renaming onto another user's userName is 409 and changes nothing."""
        ben = people["ben"]
        result = await scim.call("PUT", f"/Users/{ben['id']}", body={**ben, "userName": people["ann"]["userName"]})
        assert_error(result, 409, "uniqueness")
        assert await scim.ok("GET", f"/Users/{ben['id']}") == ben

    async def test_put_id_mismatch_is_400(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """A PUT body whose id differs from the path's is 400 mutability."""
        ann = people["ann"]
        result = await scim.call("PUT", f"/Users/{ann['id']}", body={**ann, "id": people["ben"]["id"]})
        assert_error(result, 400, "mutability")

    async def test_put_unknown_is_404(self, scim: Scim) -> None:
        """PUT on an id that names nothing is 404."""
        body = {"schemas": [CORE_USER], "userName": f"{scim.ns}ghost"}
        assert_error(await scim.call("PUT", f"/Users/{uuid.uuid4()}", body=body), 404)

    async def test_put_group_members(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """PUT of a group sets its member list exactly."""
        eng = people["eng"]
        body = {"schemas": [CORE_GROUP], "displayName": eng["displayName"], "members": [{"value": people["cat"]["id"]}]}
        replaced = await scim.ok("PUT", f"/Groups/{eng['id']}", body=body)
        assert member_ids(replaced) == {people["cat"]["id"]}

    # ---- PATCH --------------------------------------------------------------------------------

    async def test_patch_replace_add_remove(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """PATCH replace, add and remove change exactly the attributes named."""
        cat = people["cat"]
        body = patch_body(
            {"op": "replace", "path": "title", "value": "Chief"},
            {"op": "add", "path": "emails", "value": [{"type": "work", "value": "cat@z.example"}]},
            {"op": "remove", "path": "displayName"},
            {"op": "Replace", "value": {"name.givenName": "Kat"}},
        )
        patched = await scim.ok("PATCH", f"/Users/{cat['id']}", body=body)
        assert patched["title"] == "Chief"
        assert [e["value"] for e in patched["emails"]] == ["cat@z.example"]
        assert "displayName" not in patched
        assert patched["name"]["givenName"] == "Kat"
        assert patched["name"]["familyName"] == "Gamma"
        assert patched[ENTERPRISE]["department"] == "Sales"
        assert await scim.ok("GET", f"/Users/{cat['id']}") == patched

    async def test_patch_value_paths(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """Value paths with filters select the values a PATCH changes."""
        ann = people["ann"]
        patched = await scim.ok(
            "PATCH",
            f"/Users/{ann['id']}",
            body=patch_body({"op": "replace", "path": 'emails[type eq "work"].value', "value": "ann@new.example"}),
        )
        assert [e["value"] for e in patched["emails"]] == ["ann@new.example"]
        patched = await scim.ok(
            "PATCH", f"/Users/{ann['id']}", body=patch_body({"op": "remove", "path": 'phoneNumbers[type eq "mobile"]'})
        )
        assert "phoneNumbers" not in patched
        assert patched["emails"][0]["value"] == "ann@new.example"

    async def test_patch_enterprise_attributes(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """PATCH reaches enterprise extension attributes by URN path and by extension object."""
        ann = people["ann"]
        patched = await scim.ok(
            "PATCH",
            f"/Users/{ann['id']}",
            body=patch_body(
                {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Support"},
                {"op": "add", "value": {ENTERPRISE: {"manager": {"value": people["dan"]["id"]}}}},
            ),
        )
        assert patched[ENTERPRISE]["department"] == "Support"
        assert patched[ENTERPRISE]["manager"]["value"] == people["dan"]["id"]
        found = await scim.listed("/Users", f'{ENTERPRISE}:department eq "Support"')
        assert [r["id"] for r in found["Resources"]] == [ann["id"]]

    async def test_patch_removing_the_manager_id_unassigns_the_manager(
        self, scim: Scim, people: dict[str, dict[str, Any]]
    ) -> None:
        """``remove …:manager.value`` (and Entra's replace with an empty value) leave the user without a manager,
        whatever sub-attributes the shown manager had; a PatchOp schema URI in another case is accepted."""
        ben = people["ben"]
        assert ben[ENTERPRISE]["manager"]["value"] == people["ann"]["id"]
        removed = await scim.ok(
            "PATCH", f"/Users/{ben['id']}", body=patch_body({"op": "remove", "path": f"{ENTERPRISE}:manager.value"})
        )
        assert "manager" not in removed.get(ENTERPRISE, {})
        body = patch_body({"op": "add", "path": f"{ENTERPRISE}:manager", "value": {"value": people["dan"]["id"]}})
        body["schemas"] = [PATCH_SCHEMA.lower()]
        assert (await scim.ok("PATCH", f"/Users/{ben['id']}", body=body))[ENTERPRISE]["manager"]["value"] == people[
            "dan"
        ]["id"]
        emptied = await scim.ok(
            "PATCH",
            f"/Users/{ben['id']}",
            body=patch_body({"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": ""}}),
        )
        assert "manager" not in emptied.get(ENTERPRISE, {})

    async def test_patch_members(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """members add and remove (value filter, and Entra's remove with a value) change only those members."""
        eng, ann, ben, cat, dan = (people[n] for n in ("eng", "ann", "ben", "cat", "dan"))
        path = f"/Groups/{eng['id']}"
        added = await scim.ok(
            "PATCH",
            path,
            body=patch_body({"op": "add", "path": "members", "value": [{"value": cat["id"]}, {"value": dan["id"]}]}),
        )
        assert member_ids(added) == {ann["id"], ben["id"], cat["id"], dan["id"]}
        removed = await scim.ok(
            "PATCH", path, body=patch_body({"op": "remove", "path": f'members[value eq "{ann["id"]}"]'})
        )
        assert member_ids(removed) == {ben["id"], cat["id"], dan["id"]}
        removed = await scim.ok(
            "PATCH", path, body=patch_body({"op": "Remove", "path": "members", "value": [{"value": cat["id"]}]})
        )
        assert member_ids(removed) == {ben["id"], dan["id"]}
        assert member_ids(await scim.ok("GET", path)) == {ben["id"], dan["id"]}
        holding = await scim.listed("/Groups", f'members[value eq "{dan["id"]}"]')
        assert {r["id"] for r in holding["Resources"]} == {eng["id"], people["mgr"]["id"]}

    async def test_adding_an_existing_member_is_a_no_op(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """Adding a member the group already has succeeds and leaves the members unchanged."""
        eng = people["eng"]
        body = patch_body({"op": "add", "path": "members", "value": [{"value": people["ann"]["id"]}]})
        patched = await scim.ok("PATCH", f"/Groups/{eng['id']}", body=body)
        assert member_ids(patched) == member_ids(eng)
        patched = await scim.ok("PATCH", f"/Groups/{eng['id']}", body=body)
        assert member_ids(patched) == member_ids(eng)

    async def test_removing_a_non_member_is_a_no_op(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """Removing a member the group does not have (or an unknown id) succeeds and changes nothing."""
        eng = people["eng"]
        body = patch_body(
            {"op": "remove", "path": f'members[value eq "{people["dan"]["id"]}" or value eq "{uuid.uuid4()}"]'}
        )
        patched = await scim.ok("PATCH", f"/Groups/{eng['id']}", body=body)
        assert member_ids(patched) == member_ids(eng)

    async def test_empty_group(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """A group can be created empty, emptied and filled again; it never shows or matches a member it lacks."""
        empty = await scim.group("empty")
        assert member_ids(empty) == set()
        assert member_ids(await scim.ok("GET", f"/Groups/{empty['id']}")) == set()
        holding = await scim.listed("/Groups", "members pr")
        assert {r["id"] for r in holding["Resources"]} == {people["eng"]["id"], people["mgr"]["id"]}
        assert {r["id"] for r in (await scim.listed("/Groups", "not (members pr)"))["Resources"]} == {empty["id"]}
        dan = people["dan"]["id"]
        path = f"/Groups/{empty['id']}"
        filled = await scim.ok(
            "PATCH", path, body=patch_body({"op": "add", "path": "members", "value": [{"value": dan}]})
        )
        assert member_ids(filled) == {dan}
        emptied = await scim.ok("PATCH", path, body=patch_body({"op": "remove", "path": f'members[value eq "{dan}"]'}))
        assert member_ids(emptied) == set()
        mgr = people["mgr"]
        body = {"schemas": [CORE_GROUP], "displayName": mgr["displayName"], "members": []}
        assert member_ids(await scim.ok("PUT", f"/Groups/{mgr['id']}", body=body)) == set()
        refilled = await scim.ok("PUT", f"/Groups/{mgr['id']}", body={**body, "members": [{"value": dan}]})
        assert member_ids(refilled) == {dan}

    async def test_member_operations_take_effect_in_order(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """Members-only PATCH operations apply in sequence (RFC 7644 §3.5.2): a member removed and added back
        stays, one added and then removed is gone, one added twice or removed twice is no error."""
        eng, ann, cat = people["eng"], people["ann"]["id"], people["cat"]["id"]
        path = f"/Groups/{eng['id']}"
        remove_ann = {"op": "remove", "path": f'members[value eq "{ann}"]'}
        add = [{"op": "add", "path": "members", "value": [{"value": i}]} for i in (ann, cat)]
        kept = await scim.ok("PATCH", path, body=patch_body(remove_ann, add[0]))
        assert member_ids(kept) == member_ids(eng)
        gone = await scim.ok(
            "PATCH", path, body=patch_body(add[1], {"op": "remove", "path": f'members[value eq "{cat}"]'})
        )
        assert member_ids(gone) == member_ids(eng)
        twice = {"op": "add", "path": "members", "value": [{"value": cat}, {"value": cat}]}
        added = await scim.ok("PATCH", path, body=patch_body(twice, add[1]))
        assert member_ids(added) == member_ids(eng) | {cat}
        removed = await scim.ok("PATCH", path, body=patch_body(remove_ann, remove_ann))
        assert member_ids(removed) == member_ids(eng) - {ann} | {cat}
        assert member_ids(await scim.ok("GET", path)) == member_ids(removed)

    async def test_patch_keeps_what_scim_cannot_show(
        self, scim: Scim, people: dict[str, dict[str, Any]], directory: Directory
    ) -> None:
        """A member or manager that is no SCIM resource (a device, a contact) is not a change a PATCH asked
        for: renaming the group, changing its SCIM members, or a user's title leaves it where it is."""
        eng, ann, ben = people["eng"], people["ann"], people["ben"]
        users = dnlib.join(scim.profile.resources[0].container, directory.base_dn)
        other = dnlib.join(f"cn={scim.ns}printer", users)
        kind = "contact" if self.profile_name == "ad" else "device"
        group, person = eng[LDAP_ENTRY]["distinguishedName"], ann[LDAP_ENTRY]["distinguishedName"]
        await directory.add(other, {"objectClass": ["top", kind], "cn": [f"{scim.ns}printer"]})
        try:
            await directory.modify(group, [Modification(ModOp.ADD, "member", (other,))])
            await directory.modify(person, [Modification(ModOp.REPLACE, "manager", (other,))])
            path = f"/Groups/{eng['id']}"
            renamed = await scim.ok(
                "PATCH", path, body=patch_body({"op": "replace", "path": "displayName", "value": f"{scim.ns}eng2"})
            )
            removed = await scim.ok(
                "PATCH",
                path,
                body=patch_body(
                    {"op": "replace", "path": "displayName", "value": f"{scim.ns}eng3"},
                    {"op": "remove", "path": "members", "value": [{"value": ben["id"]}]},
                ),
            )
            assert member_ids(renamed) == member_ids(eng)
            assert member_ids(removed) == {ann["id"]}
            held = await directory.get(removed[LDAP_ENTRY]["distinguishedName"], ["member"])
            assert held is not None
            assert {dnlib.normalize(str(m)) for m in held.get("member")} == {
                dnlib.normalize(person),
                dnlib.normalize(other),
            }
            retitled = await scim.ok(
                "PATCH", f"/Users/{ann['id']}", body=patch_body({"op": "replace", "path": "title", "value": "Lead"})
            )
            assert retitled["title"] == "Lead"
            managed = await directory.get(retitled[LDAP_ENTRY]["distinguishedName"], ["manager"])
            assert managed is not None
            assert [dnlib.normalize(str(m)) for m in managed.get("manager")] == [dnlib.normalize(other)]
        finally:
            await directory.modify(person, [Modification(ModOp.DELETE, "manager", ())])
            await directory.delete(other)

    async def test_add_unknown_member_is_400(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """Adding a member id that names nothing is 400 invalidValue and changes nothing."""
        eng = people["eng"]
        body = patch_body({"op": "add", "path": "members", "value": [{"value": str(uuid.uuid4())}]})
        assert_error(await scim.call("PATCH", f"/Groups/{eng['id']}", body=body), 400, "invalidValue")
        assert member_ids(await scim.ok("GET", f"/Groups/{eng['id']}")) == member_ids(eng)

    async def test_patch_group_rename_and_members_together(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """A PATCH that renames a group and adds a member does both."""
        mgr = people["mgr"]
        body = patch_body(
            {"op": "replace", "path": "displayName", "value": f"{scim.ns}managers"},
            {"op": "add", "path": "members", "value": [{"value": people["ann"]["id"]}]},
        )
        patched = await scim.ok("PATCH", f"/Groups/{mgr['id']}", body=body)
        assert patched["displayName"] == f"{scim.ns}managers"
        assert member_ids(patched) == {people["dan"]["id"], people["ann"]["id"]}

    async def test_patch_rename_user(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """A PATCH of userName renames the user and keeps its id and group memberships."""
        dan = people["dan"]
        patched = await scim.ok(
            "PATCH",
            f"/Users/{dan['id']}",
            body=patch_body({"op": "replace", "path": "userName", "value": f"{scim.ns}daniel"}),
        )
        assert patched["id"] == dan["id"]
        assert patched["userName"] == f"{scim.ns}daniel"
        assert member_ids(await scim.ok("GET", f"/Groups/{people['mgr']['id']}")) == {dan["id"]}

    async def test_patch_missing_resource_is_404(self, scim: Scim) -> None:
        """PATCH on an id that names nothing is 404."""
        body = patch_body({"op": "replace", "path": "title", "value": "x"})
        assert_error(await scim.call("PATCH", f"/Users/{uuid.uuid4()}", body=body), 404)
        members = patch_body({"op": "add", "path": "members", "value": [{"value": str(uuid.uuid4())}]})
        assert_error(await scim.call("PATCH", f"/Groups/{uuid.uuid4()}", body=members), 404)

    @pytest.mark.parametrize(
        ("body", "scim_type"),
        [
            ({"schemas": [PATCH_SCHEMA]}, "invalidSyntax"),
            ({"schemas": [PATCH_SCHEMA], "Operations": []}, "invalidSyntax"),
            ({"schemas": ["urn:wrong"], "Operations": [{"op": "add", "path": "title", "value": "x"}]}, "invalidSyntax"),
            (patch_body({"op": "frobnicate", "path": "title", "value": "x"}), "invalidSyntax"),
            (patch_body({"op": "add", "path": "title"}), "invalidValue"),
            (patch_body({"op": "replace", "path": "emails[type eq", "value": "x"}), "invalidPath"),
            (patch_body({"op": "replace", "path": "id", "value": "x"}), "mutability"),
            (patch_body({"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}), "mutability"),
            (patch_body({"op": "remove"}), "noTarget"),
            (patch_body({"op": "replace", "path": 'emails[type eq "home"].value', "value": "x"}), "noTarget"),
            (patch_body({"op": "add", "path": "title", "value": "x"}, "not an operation"), "invalidSyntax"),
            (["not", "an", "object"], "invalidSyntax"),
            (patch_body({"op": "remove", "path": 'emails[value eq "\\ud83d"]'}), "invalidPath"),
            (patch_body({"op": "replace", "path": "emails", "value": [{"value": "a@x", "type": 5}]}), "invalidValue"),
            (
                patch_body({"op": "add", "path": "emails", "value": [{"value": "a@x", "type": ["work"]}]}),
                "invalidValue",
            ),
            (patch_body({"op": "replace", "path": ENTERPRISE, "value": "x"}), "invalidValue"),
            (patch_body({"op": "add", "path": ENTERPRISE, "value": 5}), "invalidValue"),
        ],
    )
    async def test_invalid_patch_is_400(
        self, scim: Scim, people: dict[str, dict[str, Any]], body: Any, scim_type: str
    ) -> None:
        """An invalid PATCH is 400 with the RFC 7644 scimType naming the problem, and changes nothing."""
        ann = people["ann"]
        assert_error(await scim.call("PATCH", f"/Users/{ann['id']}", body=body), 400, scim_type)
        assert await scim.ok("GET", f"/Users/{ann['id']}") == ann

    async def test_failed_patch_changes_nothing(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """A PATCH whose second operation fails leaves the first one unapplied (all or nothing)."""
        ann = people["ann"]
        body = patch_body(
            {"op": "replace", "path": "title", "value": "Changed"},
            {"op": "replace", "path": 'emails[type eq "home"].value', "value": "x"},
        )
        assert_error(await scim.call("PATCH", f"/Users/{ann['id']}", body=body), 400, "noTarget")
        assert (await scim.ok("GET", f"/Users/{ann['id']}"))["title"] == "Engineer"

    # ---- DELETE -------------------------------------------------------------------------------

    async def test_delete(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """DELETE is 204 with no body; then GET and DELETE of that id are 404 and lists no longer show it."""
        cat = people["cat"]
        result = await scim.call("DELETE", f"/Users/{cat['id']}")
        assert (result.status, result.body) == (204, None)
        assert_error(await scim.call("GET", f"/Users/{cat['id']}"), 404)
        assert_error(await scim.call("DELETE", f"/Users/{cat['id']}"), 404)
        assert (await scim.listed("/Users", f'id eq "{cat["id"]}"'))["totalResults"] == 0
        result = await scim.call("DELETE", f"/Groups/{people['mgr']['id']}")
        assert result.status == 204
        assert_error(await scim.call("GET", f"/Groups/{people['mgr']['id']}"), 404)

    async def test_delete_needs_the_right_type(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """DELETE /Users/{id of a group} is 404 and the group survives."""
        assert_error(await scim.call("DELETE", f"/Users/{people['eng']['id']}"), 404)
        await scim.ok("GET", f"/Groups/{people['eng']['id']}")

    # ---- /Changes -----------------------------------------------------------------------------

    async def _changes_since(self, scim: Scim, watermark: str) -> tuple[list[dict[str, Any]], str]:
        records: list[dict[str, Any]] = []
        for _ in range(1000):
            body = await scim.ok("GET", "/Changes", {"watermark": watermark, "count": "10000"})
            records.extend(body["Resources"])
            watermark = body["watermark"]
            if not body["more"]:
                return records, watermark
        pytest.fail("the change feed never ended")

    async def test_changes_without_watermark(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """Without a watermark the feed returns no changes and a watermark to start from."""
        body = await scim.ok("GET", "/Changes")
        assert body["Resources"] == []
        assert body["totalResults"] == 0
        assert isinstance(body["watermark"], str)
        assert body["watermark"]
        records, _ = await self._changes_since(scim, body["watermark"])
        assert records == []

    async def test_changes_report_upserts_and_deletes(self, scim: Scim) -> None:
        """After create, modify, rename and delete the feed has upserts in their latest state and the deleted id."""
        start = (await scim.ok("GET", "/Changes"))["watermark"]
        kept = await scim.user("kept", title="One")
        gone = await scim.user("gone")
        await scim.ok(
            "PATCH", f"/Users/{kept['id']}", body=patch_body({"op": "replace", "path": "title", "value": "Two"})
        )
        await scim.ok(
            "PATCH",
            f"/Users/{kept['id']}",
            body=patch_body({"op": "replace", "path": "userName", "value": f"{scim.ns}moved"}),
        )
        group = await scim.group("team", [kept["id"]])
        assert (await scim.call("DELETE", f"/Users/{gone['id']}")).status == 204
        records, end = await self._changes_since(scim, start)
        ours = {r["id"]: r for r in records if r["id"] in {kept["id"], gone["id"], group["id"]}}
        assert ours[kept["id"]]["op"] == "upsert"
        assert ours[kept["id"]]["resourceType"] == "User"
        assert ours[kept["id"]]["resource"]["userName"] == f"{scim.ns}moved"
        assert ours[kept["id"]]["resource"]["title"] == "Two"
        assert ours[group["id"]]["op"] == "upsert"
        assert member_ids(ours[group["id"]]["resource"]) == {kept["id"]}
        assert ours[gone["id"]]["op"] == "delete"
        assert "resource" not in ours[gone["id"]]
        assert [r["id"] for r in records].count(kept["id"]) == 1
        again, _ = await self._changes_since(scim, end)
        assert not {r["id"] for r in again} & set(ours)

    async def test_changes_report_deletion_of_a_seen_object(self, scim: Scim) -> None:
        """A resource the feed has shown, deleted later, comes as a delete, also when replayed from before."""
        start = (await scim.ok("GET", "/Changes"))["watermark"]
        gone = await scim.user("seen")
        seen, middle = await self._changes_since(scim, start)
        assert [r["op"] for r in seen if r["id"] == gone["id"]] == ["upsert"]
        assert (await scim.call("DELETE", f"/Users/{gone['id']}")).status == 204
        for since in (middle, start):
            records, _ = await self._changes_since(scim, since)
            assert [r["op"] for r in records if r["id"] == gone["id"]] == ["delete"]

    async def test_changes_bad_count_is_400(self, scim: Scim) -> None:
        """A /Changes count that is not an integer in 1..10000 is 400 invalidValue."""
        for count in ("0", "10001", "many"):
            assert_error(await scim.call("GET", "/Changes", {"count": count}), 400, "invalidValue")

    # ---- POST /.search ------------------------------------------------------------------------

    async def test_search_endpoint(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """POST /Users/.search takes the list parameters from a SearchRequest body."""
        body = {
            "schemas": [SEARCH_SCHEMA],
            "filter": scim.scoped("/Users", 'title co "engineer"'),
            "attributes": ["userName"],
            "count": 1,
        }
        found = await scim.ok("POST", "/Users/.search", body=body)
        assert found["totalResults"] == 2
        assert len(found["Resources"]) == 1
        assert set(found["Resources"][0]) == {"schemas", "id", "userName"}
        groups = await scim.ok(
            "POST", "/Groups/.search", body={"schemas": [SEARCH_SCHEMA], "filter": scim.scoped("/Groups", None)}
        )
        assert groups["totalResults"] == 2

    async def test_search_with_bad_body_is_400(self, scim: Scim) -> None:
        """A .search body that is not an object, or has an invalid filter, is 400."""
        assert_error(await scim.call("POST", "/Users/.search", body=["x"]), 400, "invalidSyntax")
        result = await scim.call("POST", "/Users/.search", body={"schemas": [SEARCH_SCHEMA], "filter": "userName eq"})
        assert_error(result, 400, "invalidFilter")

    # ---- bad input ----------------------------------------------------------------------------

    @pytest.mark.parametrize("body", [None, "a string", ["a", "list"], 42, True])
    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
    async def test_non_object_body_is_400(
        self, scim: Scim, people: dict[str, dict[str, Any]], method: str, body: Any
    ) -> None:
        """A write whose body is not a JSON object is 400 invalidSyntax."""
        path = "/Users" if method == "POST" else f"/Users/{people['ann']['id']}"
        assert_error(await scim.call(method, path, body=body), 400, "invalidSyntax")

    @pytest.mark.parametrize("path", ["/", "", "/Printers", "/Printers/1", "/Userz", "/Me", "/Bulk"])
    async def test_unknown_path_is_404(self, scim: Scim, path: str) -> None:
        """A path that names no SCIM endpoint is 404."""
        assert_error(await scim.call("GET", path), 404)

    @pytest.mark.parametrize(
        ("method", "path"),
        [("DELETE", "/Users"), ("PUT", "/Groups"), ("PATCH", "/Users"), ("POST", "/Changes"), ("DELETE", "/Changes")],
    )
    async def test_unsupported_method_is_405(self, scim: Scim, method: str, path: str) -> None:
        """A method an existing endpoint does not support is 405."""
        assert_error(await scim.call(method, path, body={}), 405)

    async def test_method_on_item_is_405(self, scim: Scim, people: dict[str, dict[str, Any]]) -> None:
        """POST to a resource (not its collection) is 405."""
        body = {"schemas": [CORE_USER], "userName": f"{scim.ns}x"}
        assert_error(await scim.call("POST", f"/Users/{people['ann']['id']}", body=body), 405)

    @pytest.mark.parametrize("scim_filter", INVALID_FILTERS)
    async def test_invalid_filter_is_400(self, scim: Scim, scim_filter: str) -> None:
        """A filter that does not parse, or whose operator cannot apply to its value, is 400 invalidFilter."""
        assert_error(await scim.call("GET", "/Users", {"filter": scim_filter}), 400, "invalidFilter")

    async def test_case_insensitive_filters_fold_only_one_to_one_letter_pairs(self, scim: Scim) -> None:
        """``title co "s"`` finds "GRÖSSE" but not "Größe" or "te\\u017ft" (long s), ``co "k"`` not the Kelvin sign:
        letters with one upper and one lower form fold (Ö with ö), letters Unicode case folding equates with
        other letters do not, on every directory alike (slapd equates long s with s, Samba AD does not)."""
        titles = {"grosse": "GRÖSSE", "grosze": "Größe", "long-s": "te\u017ft", "kelvin": "\u212aelvin", "k": "kelvin"}
        users = {key: (await scim.user(key, title=title))["id"] for key, title in titles.items()}
        expected = {
            'title co "s"': {"grosse"},
            'title co "ö"': {"grosse", "grosze"},
            'title eq "GRÖSSE"': {"grosse"},
            'title eq "GRÖßE"': {"grosze"},
            'title co "ß"': {"grosze"},
            'title sw "TE\u017f"': {"long-s"},
            'title co "k"': {"k"},
            'title sw "\u212a"': {"kelvin"},
        }
        for scim_filter, keys in expected.items():
            listed = await scim.listed("/Users", scim_filter, count="100")
            assert {resource["id"] for resource in listed["Resources"]} == {users[key] for key in keys}, scim_filter

    async def test_generated_filters_list_what_evaluating_them_selects(self, scim: Scim, profile: Profile) -> None:
        """For generated filters with awkward values, a list returns exactly the resources that evaluating
        the filter on each of them (``protocol.scimeval``) selects: the LDAP filter the translator makes
        (exact, or a superset checked again) and the directory's own matching give the same answer."""
        rng = random.Random(7644)
        domain = "@example.test" if profile.name == "ad" else ""  # AD's userName is a userPrincipalName
        checked = 0
        for batch in range(20):
            for index in range(4):
                await scim.user(f"g{batch}-{index}{domain}", **generated_user(rng))
            resources = (await scim.listed("/Users", f'userName sw "{scim.ns}g{batch}-"', count="100"))["Resources"]
            seen = sorted(pair for resource in resources for pair in _stored(resource))  # not in listing order
            for _ in range(12):
                text = generated_filter(rng, seen)
                try:
                    node = sf.parse_filter(text)
                    scimeval.check(node)
                except ScimError:  # refused before any search (gt on a boolean…): the cases above cover it
                    continue
                expected = {resource["id"] for resource in resources if scimeval.matches(node, resource)}
                scoped = f'userName sw "{scim.ns}g{batch}-" and ({text})'
                listed = await scim.ok("GET", "/Users", {"filter": scoped, "count": "100"})
                assert {resource["id"] for resource in listed["Resources"]} == expected, text
                checked += 1
        assert checked >= 200

    async def test_lookups_at_once_answer_as_each_alone(self, scim: Scim, profile: Profile) -> None:
        """Equality lookups sent together (``agent.scim.lookups`` reads them with one search where the
        directory shares lookups) answer exactly what each answers alone: other spellings of a value, values
        with filter metacharacters, missing and repeated values, projections and counts, and a value so
        many entries share that the shared search is abandoned."""
        domain = "@example.test" if profile.name == "ad" else ""
        ns = scim.ns
        names = ["ann", "Ben", "a*)(uid=*", "c\\5c", "d e"]
        for name in names:
            await scim.user(name + domain, title=f"{ns}plain" if name == "ann" else f"{ns}Engineer")
        for index in range(10):  # more entries than a shared search keeps for two lookups
            await scim.user(f"e{index}{domain}", title=f"{ns}Engineer")
        queries: list[dict[str, str]] = [
            *({"filter": f"userName eq {json.dumps(ns + name + domain)}"} for name in names),
            {"filter": f'userName eq "{ns}ann{domain}"', "attributes": "userName"},
            {"filter": f'userName eq "{ns}ann{domain}"', "count": "0"},
            {"filter": f'userName eq "{ns.upper()}ANN{domain.upper()}"'},  # another spelling, and the exact one
            {"filter": f'username eq "{ns}ben{domain}"', "excludedAttributes": "title"},
            {"filter": f'userName eq "{ns}missing{domain}"'},
            {"filter": f'title eq "{ns}Engineer"'},
            {"filter": f'title eq "{ns}plain"'},
            {"filter": f'title eq "{ns}plain" and userName sw "{ns}"'},  # not a plain lookup: read alone
        ]
        alone = [await scim.ok("GET", "/Users", query) for query in queries]
        lookups = scim.handler.lister.lookups
        searches = lookups.searches
        together = await asyncio.gather(*(scim.ok("GET", "/Users", query) for query in queries))
        assert together == alone
        assert (lookups.searches > searches) == scim.directory.shared_lookups
        user_names = [[r["userName"] for r in body["Resources"]] for body in alone]
        assert user_names[:5] == [[ns + name + domain] for name in names]
        assert alone[5]["Resources"][0].keys() == {"schemas", "id", "userName"}
        assert alone[6]["totalResults"] == 1
        assert alone[6]["Resources"] == []
        assert user_names[7] == [f"{ns}ann{domain}"]
        assert user_names[8] == [f"{ns}Ben{domain}"]
        assert "title" not in alone[8]["Resources"][0]
        assert alone[9]["totalResults"] == 0
        assert alone[10]["totalResults"] == 14
        assert user_names[11] == user_names[12] == [f"{ns}ann{domain}"]

    @pytest.fixture
    async def awkward(self, scim: Scim) -> dict[str, dict[str, Any]]:
        """Users whose values hold LDAP filter metacharacters."""
        return {
            "star": await scim.user("a*)(uid=*", title="*"),
            "paren": await scim.user("b(x)", title="(x)"),
            "slash": await scim.user("c\\5c", title="back\\slash"),
            "plain": await scim.user("d", title="plain"),
        }

    @pytest.mark.parametrize(
        ("template", "expected"),
        [
            ('userName eq "*)(uid=*"', set()),
            ('userName eq "{ns}a*)(uid=*"', {"star"}),
            ('userName eq "{ns}*"', set()),
            ('userName sw "{ns}a*)("', {"star"}),
            ('userName co "*"', {"star"}),
            ('userName co ")(uid=*"', {"star"}),
            ('userName co "(x)"', {"paren"}),
            ('userName eq "{ns}c\\\\5c"', {"slash"}),
            ('userName eq "{ns}c\\\\"', set()),
            ('userName co "\\\\"', {"slash"}),
            ('title eq "*"', {"star"}),
            ('title co "*"', {"star"}),
            ('title eq "(x)"', {"paren"}),
            ('title eq "\\\\2a"', set()),
            ('title eq "back\\\\slash"', {"slash"}),
            ('title eq "pl\\u0000ain"', set()),
            ('title co "\\u0000"', set()),
            ('title eq "plain\\u0000"', set()),
            ('title eq "plain)(|(title=*"', set()),
            ('title eq "plain" or title eq "\\u0000*)(objectClass=*"', {"plain"}),
        ],
    )
    async def test_filter_injection(
        self, scim: Scim, awkward: dict[str, dict[str, Any]], template: str, expected: set[str]
    ) -> None:
        """Values with LDAP filter metacharacters and NUL select exactly the intended entries, never more."""
        body = await scim.listed("/Users", template.replace("{ns}", scim.ns))
        assert {r["id"] for r in body["Resources"]} == {awkward[name]["id"] for name in expected}
        assert body["totalResults"] == len(expected)

    async def test_injection_outside_the_namespace(self, scim: Scim, awkward: dict[str, dict[str, Any]]) -> None:
        """An unscoped injection attempt matches no entry at all, not every entry."""
        for scim_filter in ('userName eq "*)(uid=*"', 'userName eq "x)(|(objectClass=*"', 'id eq "*"'):
            body = await scim.ok("GET", "/Users", {"filter": scim_filter})
            assert body["totalResults"] == 0, scim_filter
