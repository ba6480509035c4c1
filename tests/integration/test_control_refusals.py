"""What the control plane refuses: takeovers, anonymous endpoints, endless durations, bad bytes, bad domains."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.lifecycle import ControlPlaneRefusedError, register
from service.control.plane import ControlError
from tests.integration.control_support import (
    ADMIN_TOKEN,
    DOMAIN,
    admin_for,
    agent_call,
    control_plane,
    raw_call,
    register_agent,
)

AUTH = {b"Authorization": b"Bearer " + ADMIN_TOKEN.encode(), b"Content-Type": b"application/json"}


def _bootstrap_body(nonce: str) -> dict[str, object]:
    return {"agent_id": "agent-1", "nonce": nonce, "sent_at": time.time()}


async def test_a_token_of_one_domain_cannot_re_register_an_agent_serving_others_too(tmp_path: Path) -> None:
    """A token for a.example does not re-issue an agent that also serves b.example: 409, and the real agent
    keeps its certificate; once b.example is unassigned, the same kind of token re-registers it."""
    async with control_plane(tmp_path / "cp") as server:
        admin = admin_for(server)
        real = tmp_path / "real"
        await register_agent(server, real, "agent-1", "a.example")
        assert (await admin("POST", "/v1/admin/agents/agent-1/domains", {"domain": "b.example"}))[0] == 200
        _, token = await admin("POST", "/v1/admin/tokens", {"domain": "a.example"})
        with pytest.raises(ControlPlaneRefusedError) as refused:
            await register(
                server.url, token["token"], "agent-1", tmp_path / "thief", ca_fingerprint_pin=token["ca_fingerprint"]
            )
        assert (refused.value.status, refused.value.code) == (409, "agent_serves_other_domains")
        assert "also serves other domains" in refused.value.detail
        assert "b.example" not in refused.value.detail  # the token holder is not told which
        assert not (tmp_path / "thief").exists()
        status, document = await agent_call(real, server.url, "/v1/bootstrap", _bootstrap_body("n1"))
        assert (status, document["domains"]) == (200, ["a.example", "b.example"])

        _, other = await admin("POST", "/v1/admin/tokens", {"domain": "c.example"})
        with pytest.raises(ControlPlaneRefusedError) as taken:
            await register(
                server.url, other["token"], "agent-1", tmp_path / "c", ca_fingerprint_pin=other["ca_fingerprint"]
            )
        assert (taken.value.status, taken.value.code) == (409, "agent_id_taken")

        assert (await admin("DELETE", "/v1/admin/agents/agent-1/domains/b.example"))[0] == 200
        answer = await register(
            server.url, token["token"], "agent-1", tmp_path / "again", ca_fingerprint_pin=token["ca_fingerprint"]
        )
        assert answer["domain"] == "a.example"  # the refused attempt did not use the token up


@pytest.mark.parametrize(
    "endpoint",
    [
        {"url": "http://127.0.0.1:18080/scim?allow_anonymous=true"},
        {"url": "http://127.0.0.1:18080/scim?token=t&allow%5Fanonymous=1"},
        {"url": "http://127.0.0.1:18080/scim", "options": {"allow_anonymous": True}},
        {"url": "https://127.0.0.1:18080/scim?allow_anonymous=false"},
    ],
)
async def test_endpoints_with_allow_anonymous_are_refused(tmp_path: Path, endpoint: dict[str, object]) -> None:
    """An endpoint that sets allow_anonymous (query or options, any value) is refused 400 and nothing is stored."""
    async with control_plane(tmp_path / "cp") as server:
        admin = admin_for(server)
        good = {"url": "local://fine"}
        status, body = await admin("PUT", f"/v1/admin/domains/{DOMAIN}/endpoints", {"endpoints": [good, endpoint]})
        assert (status, body["error"]) == (400, "anonymous_endpoint")
        assert "allow_anonymous" in body["detail"]
        assert server.plane is not None
        assert await server.plane.store.endpoints([DOMAIN]) == {}


async def test_token_ttl_and_key_grace_must_be_finite_and_bounded(tmp_path: Path) -> None:
    """A token ttl or a rotation grace that is NaN, infinite or above its maximum is a 400; nothing is made."""
    async with control_plane(tmp_path / "cp") as server:
        assert server.plane is not None
        admin = admin_for(server)
        for ttl in (1e300, 30 * 86400 + 1, 0):
            status, body = await admin("POST", "/v1/admin/tokens", {"domain": DOMAIN, "ttl": ttl})
            assert (status, body["error"]) == (400, "invalid_request"), ttl
            assert "at most 2592000 (30 days)" in body["detail"]
        for grace in (1e300, 7 * 86400 + 1, -1):
            status, body = await admin("POST", "/v1/admin/keys/rotate", {"grace": grace})
            assert (status, body["error"]) == (400, "invalid_request"), grace
            assert "at most 604800 (7 days)" in body["detail"]
        for path, name in (("/v1/admin/tokens", "ttl"), ("/v1/admin/keys/rotate", "grace")):
            for raw in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
                body_bytes = b'{"domain": "example.com", "%s": %s}' % (name.encode(), raw)
                status, body = await raw_call(server, "POST", path, body_bytes, AUTH)
                assert (status, body["error"]) == (400, "invalid_json"), (path, raw)
        for call in (server.plane.create_token(DOMAIN, math.nan), server.plane.rotate_keys(math.inf)):
            with pytest.raises(ControlError) as refused:
                await call
            assert refused.value.status == 400
        assert len((await admin("GET", "/v1/admin/keys"))[1]["keys"]) == 1
        assert await server.plane.create_token(DOMAIN, 30 * 86400)  # the maximum itself is fine


async def test_a_rotation_shortens_the_grace_of_keys_already_retiring(tmp_path: Path) -> None:
    """After a rotation with a long grace, a rotation with grace 0 stops handing out every older key at once."""
    async with control_plane(tmp_path / "cp") as server:
        assert server.plane is not None
        first = (await server.plane.keys())[0]["id"]
        await server.plane.rotate_keys(7 * 86400)
        second = await server.plane.rotate_keys(0)
        assert [k["id"] for k in await server.plane.keys()] == [second["active"]]
        assert first not in [k["id"] for k in second["keys"]]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "headers", "status"),
    [
        ("non-UTF-8 Authorization", "GET", "/v1/admin/agents", b"", {b"Authorization": b"Bearer \xff\xfe"}, 401),
        ("deeply nested JSON", "POST", "/v1/register", b"[" * 100_000, {}, 400),
        (
            "nested near the parser's limit",
            "PATCH",
            "/v1/admin/settings",
            b'{"a": ' + b"[" * 979 + b"]" * 979 + b"}",
            AUTH,
            400,
        ),
        ("lone surrogate token", "POST", "/v1/register", b'{"token": "\\ud800", "agent_id": "a", "csr": "c"}', {}, 400),
        ("body not UTF-8", "POST", "/v1/register", b'{"token": "\xff"}', {}, 400),
        ("unknown charset", "POST", "/v1/register", b"{}", {b"Content-Type": b"application/json; charset=nope"}, 400),
        ("surrogate domain", "POST", "/v1/admin/tokens", b'{"domain": "\\udcff"}', AUTH, 400),
        ("surrogate setting key", "PATCH", "/v1/admin/settings", b'{"\\udcff": 1}', AUTH, 400),
        ("surrogate setting value", "PATCH", "/v1/admin/settings", b'{"a.b": ["\\udcff"]}', AUTH, 400),
        ("surrogate revoke reason", "POST", "/v1/admin/agents/x/revoke", b'{"reason": "\\udcff"}', AUTH, 400),
    ],
)
async def test_malformed_input_is_a_clear_refusal_without_a_traceback(
    tmp_path: Path, name: str, method: str, path: str, body: bytes, headers: dict[bytes, bytes], status: int
) -> None:
    """Bytes no client should send get a 400 (401 for the header) saying what is wrong, and no error is logged."""
    async with control_plane(tmp_path / "cp") as server:
        with capture_logs() as logs:
            answer_status, answer = await raw_call(server, method, path, body, headers)
        assert answer_status == status, (name, answer)
        assert answer["error"] in {"admin_unauthorized", "invalid_json", "invalid_request"}, name
        assert not [e for e in logs if e["log_level"] in {"error", "critical"}], logs


async def test_domains_are_normalised_and_invalid_ones_refused(tmp_path: Path) -> None:
    """Domains are lower case without blanks in tokens, endpoints, assignments and lookups; bad ones are a 400."""
    async with control_plane(tmp_path / "cp") as server:
        admin = admin_for(server)
        status, token = await admin("POST", "/v1/admin/tokens", {"domain": " Example.ORG "})
        assert (status, token["domain"]) == (200, "example.org")
        state = tmp_path / "agent"
        answer = await register(
            server.url, token["token"], "agent-1", state, ca_fingerprint_pin=token["ca_fingerprint"]
        )
        assert answer["domain"] == "example.org"
        status, _ = await admin("PUT", "/v1/admin/domains/EXAMPLE.org/endpoints", {"endpoints": [{"url": "local://x"}]})
        assert status == 200
        assert (await admin("POST", "/v1/admin/agents/agent-1/domains", {"domain": "B.Example"}))[0] == 200
        status, document = await agent_call(state, server.url, "/v1/bootstrap", _bootstrap_body("n1"))
        assert status == 200
        assert document["domains"] == ["b.example", "example.org"]
        assert document["endpoints"] == {"example.org": [{"url": "local://x", "options": {}}]}
        status, body = await admin("DELETE", "/v1/admin/agents/agent-1/domains/b.EXAMPLE")
        assert (status, body["changed"], body["agent"]["domains"]) == (200, True, ["example.org"])

        for bad in ("a..b", "-a.example", "exa mple.org", "a/b", "é.example", "x" * 64 + ".example", ""):
            for method, path, payload in (
                ("POST", "/v1/admin/tokens", {"domain": bad}),
                ("POST", "/v1/admin/agents/agent-1/domains", {"domain": bad}),
            ):
                status, body = await admin(method, path, payload)
                assert status == 400, (bad, path, body)
        status, body = await admin("PUT", "/v1/admin/domains/a..b/endpoints", {"endpoints": [{"url": "local://x"}]})
        assert (status, body["error"]) == (400, "invalid_domain")
        _, agents = await admin("GET", "/v1/admin/agents")
        assert agents["agents"][0]["domains"] == ["example.org"]


async def test_settings_that_are_not_finite_are_refused(tmp_path: Path) -> None:
    """A settings PATCH holding NaN or an infinity anywhere is a 400 and changes nothing."""
    async with control_plane(tmp_path / "cp") as server:
        assert server.plane is not None
        for raw in (b'{"signing.clock_skew": Infinity}', b'{"scim.cursor_ttl": 1e400}', b'{"x.y": [NaN]}'):
            status, body = await raw_call(server, "PATCH", "/v1/admin/settings", raw, AUTH)
            assert (status, body["error"]) == (400, "invalid_json"), raw
        with pytest.raises(ControlError) as refused:
            await server.plane.update_settings({"signing.max_lifetime": {"nested": [math.inf]}})
        assert refused.value.status == 400
        assert "signing.max_lifetime" in str(refused.value)
        assert await server.plane.store.settings() == ({}, 0)
        finite = {"signing.max_lifetime": 1e12}  # finite: kept, and skipped with a warning by the agents
        assert (await admin_for(server)("PATCH", "/v1/admin/settings", finite))[0] == 200
