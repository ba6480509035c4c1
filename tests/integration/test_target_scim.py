"""The SCIM target: the Target behaviour suite against our agent over HTTP and a SCIM server we did not write
(``scim2-server``), plus retries honouring Retry-After and batched membership PATCHes against a tiny fake.

Anchors on the agent: the openldap profile maps no ``externalId`` and no ``active``, so the agent here
runs with ``scim.profile_overrides`` that keep ``externalId`` in ``employeeType`` (users) and
``businessCategory`` (groups), and ``active`` as a boolean in ``description``. The SCIM target itself
stays standard (``externalId``); ``anchor_attribute`` exists for services that keep no ``externalId``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from typing import Any

import pytest
from aiohttp import web

from service.provisioning.targets.base import (
    TargetConflictError,
    TargetNotFoundError,
    TargetObject,
    TargetRejectedError,
    TargetUnavailableError,
)
from service.provisioning.targets.registry import TargetSettingsError, create_target
from service.provisioning.targets.scim import (
    PATCH_SCHEMA,
    ScimTarget,
    ScimTargetSettings,
    build_resource,
    equality_filter,
    flatten,
    parse_retry_after,
)
from tests.agent_support import DOMAIN, running_agent
from tests.contract.target_suite import DEPARTMENT, WORK_EMAIL, TargetBehaviour
from transports.http import HttpTransport
from transports.registry import create_transport

TOKEN = "target-test-token"
ANCHOR_OVERRIDES = {
    "User": {"externalId": "employeeType", "active": {"ldap": "description", "kind": "boolean"}},
    "Group": {"externalId": "businessCategory"},
}


# ---------------------------------------------------------------------- our agent behind the http transport


@pytest.fixture
async def agent_target() -> AsyncIterator[ScimTarget]:
    def transport(_broker: str) -> HttpTransport:
        created = create_transport("http://127.0.0.1:0/scim/v2", domains=[DOMAIN], options={"token": TOKEN})
        assert isinstance(created, HttpTransport)
        return created

    async with running_agent(
        transport=transport,
        memory={"seed_users": 1, "seed_groups": 1},
        scim={"profile_overrides": ANCHOR_OVERRIDES},
    ) as harness:
        http = harness.agent.transport
        assert isinstance(http, HttpTransport)
        target = create_target(http.url, options={"token": TOKEN, "attempts": 2, "initial_backoff": 0})
        assert isinstance(target, ScimTarget)
        async with target:
            yield target


class TestScimTargetOverAgent(TargetBehaviour):
    @pytest.fixture
    def target(self, agent_target: ScimTarget) -> ScimTarget:
        return agent_target


# ---------------------------------------------------------------------- scim2-server, in a process of its own


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def scim2_server() -> Iterator[str]:
    """``scim2-server`` (PyPI, by Yaal Coop) on loopback with a bearer token; its URL."""
    port = _free_port()
    command = [sys.executable, "-m", "scim2_server.testserver.cli", "--port", str(port), "--bearer-token", TOKEN]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    pytest.fail(f"scim2-server did not start: {output[-2000:]}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v2"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


class TestScimTargetOverScim2Server(TargetBehaviour):
    @pytest.fixture
    async def target(self, scim2_server: str) -> AsyncIterator[ScimTarget]:
        async with ScimTarget(ScimTargetSettings(base_url=scim2_server, token=TOKEN, attempts=2)) as target:
            yield target


async def test_wrong_token_is_rejected_not_retried(scim2_server: str) -> None:
    """A 401 from the service is ``TargetRejectedError`` at once (retrying the same token cannot help)."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with ScimTarget(ScimTargetSettings(base_url=scim2_server, token="wrong"), sleep=sleep) as target:
        with pytest.raises(TargetRejectedError, match="401"):
            await target.get_by_anchor("User", "x")
    assert slept == []


# ---------------------------------------------------------------------- a tiny fake: throttling and batching


class Fake:
    """An aiohttp SCIM stand-in: scripted failures first, then one user and one group; records every call."""

    def __init__(self) -> None:
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.calls: list[tuple[str, str, Any]] = []
        self.members: set[str] = set()
        self.url = ""
        self.refuse_absent_member = False
        self.authorization: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.calls.append((request.method, request.path_qs, body))
        self.authorization.append(request.headers.get("Authorization", ""))
        if self.failures:
            status, headers = self.failures.pop(0)
            error = {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": str(status),
                "detail": "busy",
            }
            return web.json_response(error, status=status, headers=headers)
        if request.method == "PATCH" and request.path.startswith("/scim/v2/Groups/"):
            members = set(self.members)  # a PATCH applies whole or not at all
            for op in body["Operations"]:
                if op["op"] == "add":
                    members.update(v["value"] for v in op["value"])
                else:
                    member = json.loads(op["path"].removeprefix("members[value eq ").removesuffix("]"))
                    if member not in members and self.refuse_absent_member:
                        error = {"status": "400", "scimType": "noTarget", "detail": f"{member} is not a member"}
                        return web.json_response(error, status=400)
                    members.discard(member)
            self.members = members
            return web.Response(status=204)
        if request.method == "GET" and request.path.startswith("/scim/v2/Groups/"):
            members = [{"value": m} for m in sorted(self.members)]
            return web.json_response({"id": "g1", "displayName": "Staff", "members": members})
        if request.method == "GET" and request.path.startswith("/scim/v2/Users/"):
            return web.json_response({"id": "u1", "userName": "ada", "externalId": "a2"})
        if request.method == "POST":
            return web.json_response({"id": "u1", **body}, status=201)
        if request.method == "GET":
            resources = [{"id": "u1", "userName": "ada", "externalId": "a1"}]
            return web.json_response({"schemas": [], "totalResults": 1, "Resources": resources})
        return web.Response(status=204)


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    state = Fake()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/scim/v2"
    try:
        yield state
    finally:
        await runner.cleanup()


class Sleeps:
    """An injected sleep that records the waits and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def _target(fake: Fake, sleeps: Sleeps, clock: float = 1_000_000.0, **settings: Any) -> ScimTarget:
    options = {"attempts": 4, "initial_backoff": 0.5, "max_backoff": 2.0, **settings}
    return ScimTarget(ScimTargetSettings(base_url=fake.url, **options), sleep=sleeps, clock=lambda: clock)


GROUP = TargetObject("g1", "Group", "ga", {"displayName": "Staff"})


async def test_429_and_503_wait_what_retry_after_says(fake: Fake) -> None:
    """Retry-After in seconds and as an HTTP-date set the waits between tries; then the call succeeds."""
    clock = 1_000_000.0
    fake.failures = [(429, {"Retry-After": "3"}), (503, {"Retry-After": formatdate(clock + 7, usegmt=True)})]
    sleeps = Sleeps()
    async with _target(fake, sleeps, clock) as target:
        found = await target.get_by_anchor("User", "a1")
    assert found is not None
    assert found.anchor == "a1"
    assert sleeps.waits == [3.0, 7.0]
    assert len(fake.calls) == 3


async def test_retry_after_is_capped_and_backoff_used_without_it(fake: Fake) -> None:
    """A huge Retry-After is cut to ``max_retry_after``; a 502 without it backs off (bounded by max_backoff)."""
    fake.failures = [(503, {"Retry-After": "86400"}), (502, {})]
    sleeps = Sleeps()
    async with _target(fake, sleeps, max_retry_after=10.0) as target:
        await target.get_by_anchor("User", "a1")
    assert sleeps.waits[0] == 10.0
    assert 0 < sleeps.waits[1] <= 2.0


async def test_retries_are_bounded_then_unavailable(fake: Fake) -> None:
    """A service that keeps answering 503 is tried ``attempts`` times, then ``TargetUnavailableError``."""
    fake.failures = [(503, {"Retry-After": "1"})] * 10
    sleeps = Sleeps()
    async with _target(fake, sleeps, attempts=3) as target:
        with pytest.raises(TargetUnavailableError, match="503"):
            await target.disable(TargetObject("u1", "User", "a1"))
    assert sleeps.waits == [1.0, 1.0]
    assert len(fake.calls) == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, TargetNotFoundError), (409, TargetConflictError), (400, TargetRejectedError), (501, TargetRejectedError)],
)
async def test_error_statuses_map_to_target_errors(fake: Fake, status: int, error: type[Exception]) -> None:
    """404, 409 and other refusals map to the Target error family at once, with the service's detail."""
    fake.failures = [(status, {})]
    sleeps = Sleeps()
    async with _target(fake, sleeps) as target:
        with pytest.raises(error, match="busy"):
            await target.delete(TargetObject("u1", "User", "a1"))
    assert sleeps.waits == []


async def test_create_retried_after_an_unseen_success_returns_the_object(fake: Fake) -> None:
    """A POST answered 503, then 409 on the retry, returns the object the first try created (found by anchor)."""
    fake.failures = [(503, {"Retry-After": "0"}), (409, {})]
    sleeps = Sleeps()
    async with _target(fake, sleeps) as target:
        created = await target.create("User", "a1", {"userName": "ada"})
    assert (created.id, created.anchor) == ("u1", "a1")
    assert [call[0] for call in fake.calls] == ["POST", "POST", "GET"]


async def test_membership_changes_are_batched_value_patches(fake: Fake) -> None:
    """250 adds and 120 removes go out as PATCHes of at most 100 values; never a replace of ``members``."""
    sleeps = Sleeps()
    fake.members = {f"old{i}" for i in range(120)}
    adds = [f"new{i}" for i in range(250)]
    removes = [f"old{i}" for i in range(120)]
    async with _target(fake, sleeps) as target:
        await target.change_members(GROUP, add=adds, remove=removes)
    patches = [body for method, path, body in fake.calls if method == "PATCH"]
    assert all(path == "/scim/v2/Groups/g1" for method, path, _ in fake.calls)
    assert all(body["schemas"] == [PATCH_SCHEMA] for body in patches)
    assert [[op["op"] for op in body["Operations"]] for body in patches] == [
        ["add"],
        ["add"],
        ["add"],
        ["remove"] * 100,
        ["remove"] * 20,
    ]
    assert patches[0]["Operations"][0] == {"op": "add", "path": "members", "value": [{"value": m} for m in adds[:100]]}
    assert patches[2]["Operations"][0]["value"] == [{"value": m} for m in adds[200:]]
    assert patches[3]["Operations"][0] == {"op": "remove", "path": 'members[value eq "old0"]'}
    assert all(op["op"] != "replace" for body in patches for op in body["Operations"])
    assert fake.members == set(adds)


async def test_member_both_added_and_removed_is_added(fake: Fake) -> None:
    """An id in both lists is added, not removed; repeated ids are sent once."""
    sleeps = Sleeps()
    async with _target(fake, sleeps) as target:
        await target.change_members(GROUP, add=["a", "b", "a"], remove=["b", "c"])
    patches = [body["Operations"] for method, _, body in fake.calls if method == "PATCH"]
    assert patches == [
        [{"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]}],
        [{"op": "remove", "path": 'members[value eq "c"]'}],
    ]


async def test_removing_absent_members_from_a_strict_service(fake: Fake) -> None:
    """A service refusing to remove non-members (noTarget) gets the removal again without them."""
    fake.refuse_absent_member = True
    fake.members = {"m1", "m2"}
    sleeps = Sleeps()
    async with _target(fake, sleeps) as target:
        await target.change_members(GROUP, add=[], remove=["m1", "ghost"])
    assert fake.members == {"m2"}
    assert [call[0] for call in fake.calls] == ["PATCH", "GET", "PATCH"]


async def test_update_sends_replace_and_remove_on_the_given_paths(fake: Fake) -> None:
    """An update is one PATCH: replace for values, remove for None, add for a typed value not there yet."""
    sleeps = Sleeps()
    user = TargetObject("u1", "User", "a1", {"userName": "ada", "title": "Eng", 'emails[type eq "home"].value': "h"})
    async with _target(fake, sleeps) as target:
        await target.update(
            user,
            {"name.givenName": "Ada", "title": None, WORK_EMAIL: "w@x", 'emails[type eq "home"].value': None},
            anchor="a2",
        )
    (method, path, body), (then, again, _) = fake.calls
    assert (method, path, then, again) == ("PATCH", "/scim/v2/Users/u1", "GET", "/scim/v2/Users/u1")
    assert body["Operations"] == [
        {"op": "replace", "path": "name.givenName", "value": "Ada"},
        {"op": "remove", "path": "title"},
        {"op": "add", "value": {"emails": [{"type": "work", "value": "w@x"}]}},
        {"op": "remove", "path": 'emails[type eq "home"].value'},
        {"op": "replace", "path": "externalId", "value": "a2"},
    ]


async def test_bearer_token_is_sent(fake: Fake) -> None:
    """Every request carries the configured bearer token."""
    async with ScimTarget(ScimTargetSettings(base_url=fake.url, token="s3cret")) as target:
        await target.get_by_anchor("User", "a1")
        await target.delete(TargetObject("u1", "User", "a1"))
    assert fake.authorization == ["Bearer s3cret", "Bearer s3cret"]


# ---------------------------------------------------------------------- pure helpers


def test_resource_paths_round_trip() -> None:
    """SCIM paths build a resource (extensions listed in ``schemas``) that flattens back to the same keys."""
    attributes = {
        "userName": "ada",
        "name.givenName": "Ada",
        WORK_EMAIL: "ada@x",
        'emails[type eq "home"].value': "ada@home",
        DEPARTMENT: "R&D",
        "active": True,
    }
    resource = build_resource("User", attributes)
    assert resource["schemas"] == [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    ]
    assert resource["emails"] == [{"type": "work", "value": "ada@x"}, {"type": "home", "value": "ada@home"}]
    assert flatten(resource) == attributes


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("externalId", 'a"b\\c', 'externalId eq "a\\"b\\\\c"'),
        ("active", False, "active eq false"),
        (WORK_EMAIL, "a@x", 'emails[type eq "work" and value eq "a@x"]'),
        (DEPARTMENT, "R&D", f'{DEPARTMENT} eq "R&D"'),
    ],
)
def test_equality_filters(path: str, value: Any, expected: str) -> None:
    """Lookups become valid SCIM filters: quotes escaped, typed paths as value filters."""
    assert equality_filter(path, value) == expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("-5", 0.0),
        (formatdate(1_000_030, usegmt=True), 30.0),
        (formatdate(999_000, usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    """Retry-After is read as delay-seconds or an HTTP-date relative to now; nonsense is ignored."""
    assert parse_retry_after(header, 1_000_000.0) == seconds


def test_registry_builds_a_scim_target_from_the_url() -> None:
    """``https://…/scim/v2?member_batch=50`` with options becomes a SCIM target with those settings."""
    target = create_target("https://idp.example/scim/v2?member_batch=50", options={"token": "t", "tls_ca": "ca.pem"})
    assert isinstance(target, ScimTarget)
    assert target.settings.base_url == "https://idp.example/scim/v2"
    assert (target.settings.member_batch, target.settings.token, target.settings.tls_ca) == (50, "t", "ca.pem")
    with pytest.raises(TargetSettingsError, match="did you mean 'member_batch'"):
        create_target("https://idp.example/scim/v2", options={"members_batch": 5})
