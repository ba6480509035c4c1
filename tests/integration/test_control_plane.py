"""The control plane end to end over real HTTPS with mutual TLS on loopback, and the agent's lifecycle."""

from __future__ import annotations

import socket
import ssl
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from agent.lifecycle import (
    ControlPlaneRefusedError,
    ControlPlaneUnavailableError,
    Identity,
    initial_transport,
    register,
)
from agent.lifecycle.client import call
from agent.lifecycle.identity import new_key_and_csr
from protocol.signing import Signer
from service.client import ScimClient
from service.control.app import ControlPlaneServer
from service.control.ca import CertificateAuthority, make_csr
from service.control.plane import NonceCache
from tests.integration.control_support import (
    DOMAIN,
    Admin,
    MovableClock,
    admin_for,
    agent_call,
    agent_settings,
    control_plane,
    lifecycle_agent,
    register_agent,
    service_settings,
    wait_until,
)
from transports.http import HttpTransport
from transports.local import LocalRequester, LocalTransport


async def _agent_record(server: ControlPlaneServer, agent_id: str) -> dict[str, object]:
    status, body = await admin_for(server)("GET", "/v1/admin/agents")
    assert status == 200, body
    return next(a for a in body["agents"] if a["id"] == agent_id)


async def _scim_client(
    server: ControlPlaneServer, broker: str, domain: str = DOMAIN
) -> tuple[ScimClient, LocalRequester]:
    assert server.plane is not None
    requester = LocalRequester.from_url(f"local://{broker}")
    await requester.connect()
    return ScimClient(requester, await server.plane.signer(), domain, timeout=10), requester


async def test_register_bootstrap_assign_end_to_end(tmp_path: Path) -> None:
    """An agent registers with a token, bootstraps over mTLS, serves signed requests, and follows its assignments."""
    async with control_plane(tmp_path / "cp") as server:
        state = tmp_path / "agent"
        await register_agent(server, state, "agent-1")
        for name in ("agent.key", "agent.pem", "ca.pem"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
        admin = admin_for(server)
        broker_a = "e2e-a"
        status, _ = await admin(
            "PUT", f"/v1/admin/domains/{DOMAIN}/endpoints", {"endpoints": [{"url": f"local://{broker_a}"}]}
        )
        assert status == 200
        settings = agent_settings(state, server.url, "agent-1", bootstrap_interval=60)
        async with lifecycle_agent(settings) as running:
            await running.bootstrapped()
            assert running.agent.not_ready_reasons() == []
            client, requester = await _scim_client(server, broker_a)
            async with requester:
                body = await client.search("/Users", count="2")
                assert body["totalResults"] == 5
            record = await _agent_record(server, "agent-1")
            assert (record["status"], record["domains"], record["last_bootstrap_address"]) == (
                "active",
                [DOMAIN],
                "127.0.0.1",
            )

            status, _ = await admin("POST", "/v1/admin/agents/agent-1/domains", {"domain": "other.example"})
            assert status == 200
            status, _ = await admin("DELETE", f"/v1/admin/agents/agent-1/domains/{DOMAIN}")
            assert status == 200
            await running.bootstrap_now()
            assert running.lifecycle.domains == ["other.example"]
            assert running.agent.dispatcher.domains == {"other.example"}  # example.com is not served any more
            other, requester = await _scim_client(server, broker_a, "other.example")
            async with requester:
                assert (await other.call("GET", "/Users")).status == 200

            await running.lifecycle.heartbeat_once()
            record = await _agent_record(server, "agent-1")
            assert isinstance(record["last_status"], dict)
            assert {"in_flight", "uptime_s", "counters", "version"} <= set(record["last_status"])
            assert record["version"] == running.lifecycle.version


async def test_registration_token_reused_or_expired_is_refused(tmp_path: Path) -> None:
    """A registration token works once and expires; a refused registration writes no files and adds no agent."""
    clock = MovableClock()
    async with control_plane(tmp_path / "cp", clock=clock) as server:
        admin = admin_for(server)
        _, token = await admin("POST", "/v1/admin/tokens", {"domain": DOMAIN, "ttl": 60})
        pin = token["ca_fingerprint"]
        await register(server.url, token["token"], "agent-1", tmp_path / "a1", ca_fingerprint_pin=pin)
        with pytest.raises(ControlPlaneRefusedError) as reused:
            await register(server.url, token["token"], "agent-2", tmp_path / "a2", ca_fingerprint_pin=pin)
        assert reused.value.code == "token_used"

        _, late = await admin("POST", "/v1/admin/tokens", {"domain": DOMAIN, "ttl": 60})
        clock.offset = 120
        with pytest.raises(ControlPlaneRefusedError) as expired:
            await register(server.url, late["token"], "agent-3", tmp_path / "a3", ca_fingerprint_pin=pin)
        assert expired.value.code == "token_expired"
        assert "expired" in expired.value.detail
        _, agents = await admin("GET", "/v1/admin/agents")
        assert [a["id"] for a in agents["agents"]] == ["agent-1"]
        assert not (tmp_path / "a2").exists()
        assert not (tmp_path / "a3").exists()


async def test_registration_refuses_a_control_plane_with_another_ca(tmp_path: Path) -> None:
    """A pinned fingerprint that does not match the control plane's CA stops registration before the token is sent."""
    async with control_plane(tmp_path / "cp") as server:
        _, token = await admin_for(server)("POST", "/v1/admin/tokens", {"domain": DOMAIN})
        wrong = CertificateAuthority.create().fingerprint
        with pytest.raises(ControlPlaneRefusedError, match="pinned fingerprint"):
            await register(server.url, token["token"], "agent-1", tmp_path / "a", ca_fingerprint_pin=wrong)
        _, agents = await admin_for(server)("GET", "/v1/admin/agents")
        assert agents["agents"] == []


async def test_client_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    """A certificate for the same agent id signed by a foreign CA fails the TLS handshake; nothing is recorded."""
    async with control_plane(tmp_path / "cp") as server:
        await register_agent(server, tmp_path / "a", "agent-1")
        foreign = CertificateAuthority.create()
        key, csr = make_csr("agent-1")
        issued = foreign.issue_client(csr, "agent-1", lifetime=3600)
        forged = tmp_path / "forged"
        forged.mkdir()
        (forged / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (forged / "cert.pem").write_text(issued.pem)
        assert server.plane is not None
        context = ssl.create_default_context(cadata=server.plane.ca.cert_pem)
        context.load_cert_chain(forged / "cert.pem", forged / "key.pem")
        body = {"agent_id": "agent-1", "nonce": "n1", "sent_at": 0}
        with pytest.raises(ControlPlaneUnavailableError):
            await call(server.url, "POST", "/v1/bootstrap", body, context=context, timeout=5)
        assert (await _agent_record(server, "agent-1"))["last_bootstrap_at"] is None


async def test_forged_stale_and_replayed_bootstraps_are_refused(tmp_path: Path) -> None:
    """A bootstrap naming another agent, sent long ago, replaying a nonce, or without a certificate is refused."""
    clock = MovableClock()
    async with control_plane(tmp_path / "cp", clock=clock) as server:
        state = tmp_path / "a"
        await register_agent(server, state, "agent-1")
        now = clock()
        status, body = await agent_call(
            state, server.url, "/v1/bootstrap", {"agent_id": "agent-2", "nonce": "n0", "sent_at": now}
        )
        assert (status, body["error"]) == (403, "forged")
        status, body = await agent_call(
            state, server.url, "/v1/bootstrap", {"agent_id": "agent-1", "nonce": "n0", "sent_at": now - 3600}
        )
        assert (status, body["error"]) == (401, "stale")
        status, body = await agent_call(
            state, server.url, "/v1/bootstrap", {"agent_id": "agent-1", "nonce": "n0", "sent_at": float("nan")}
        )
        assert (status, body["error"]) == (400, "invalid_json")  # NaN is not JSON, nor a time "within the skew"
        assert (await _agent_record(server, "agent-1"))["last_bootstrap_at"] is None

        first = {"agent_id": "agent-1", "nonce": "n1", "sent_at": now}
        status, _ = await agent_call(state, server.url, "/v1/bootstrap", first)
        assert status == 200
        recorded = (await _agent_record(server, "agent-1"))["last_bootstrap_at"]
        clock.offset = 5
        status, body = await agent_call(state, server.url, "/v1/bootstrap", first)
        assert (status, body["error"]) == (409, "replayed")
        assert (await _agent_record(server, "agent-1"))["last_bootstrap_at"] == recorded

        context = ssl.create_default_context(cadata=Identity(state).ca_file.read_text())
        with pytest.raises(ControlPlaneRefusedError) as anonymous:
            await call(server.url, "POST", "/v1/bootstrap", first, context=context, timeout=5)
        assert anonymous.value.code == "certificate_required"


async def test_an_agent_flooding_nonces_is_refused_and_the_others_still_bootstrap(tmp_path: Path) -> None:
    """An agent past its share of fresh nonces gets 429 (its earlier nonces still count as used); another
    agent bootstraps as usual; a nonce too long, or not printable ASCII, is refused before it is remembered."""
    async with control_plane(tmp_path / "cp") as server:
        assert server.plane is not None
        server.plane.nonces = NonceCache(per_agent=2)
        flooder, other = tmp_path / "a", tmp_path / "b"
        await register_agent(server, flooder, "agent-1")
        await register_agent(server, other, "agent-2")
        now = time.time()
        for nonce in ("n1", "n2"):
            status, _ = await agent_call(
                flooder, server.url, "/v1/bootstrap", {"agent_id": "agent-1", "nonce": nonce, "sent_at": now}
            )
            assert status == 200
        status, body = await agent_call(
            flooder, server.url, "/v1/bootstrap", {"agent_id": "agent-1", "nonce": "n3", "sent_at": now}
        )
        assert (status, body["error"]) == (429, "too_many_requests")
        status, body = await agent_call(
            flooder, server.url, "/v1/bootstrap", {"agent_id": "agent-1", "nonce": "n1", "sent_at": now}
        )
        assert (status, body["error"]) == (409, "replayed")
        status, _ = await agent_call(
            other, server.url, "/v1/bootstrap", {"agent_id": "agent-2", "nonce": "n1", "sent_at": now}
        )
        assert status == 200
        for bad in ("x" * 129, "caf\u00e9", "a\nb"):
            status, body = await agent_call(
                other, server.url, "/v1/bootstrap", {"agent_id": "agent-2", "nonce": bad, "sent_at": now}
            )
            assert (status, body["error"]) == (400, "invalid_request"), bad
        assert len(server.plane.nonces) == 3


async def test_non_admin_calls_to_admin_endpoints_are_refused(tmp_path: Path) -> None:
    """Without the admin token (or with the agent's certificate only) admin endpoints refuse and change nothing."""
    async with control_plane(tmp_path / "cp") as server:
        state = tmp_path / "a"
        await register_agent(server, state, "agent-1")
        admin = admin_for(server)
        for token in (None, "wrong-token", "admin-test-token-and-more"):
            outsider = Admin(admin.url, admin.ca_pem, token)
            for method, path, body in (
                ("POST", "/v1/admin/tokens", {"domain": DOMAIN}),
                ("POST", "/v1/admin/agents/agent-1/revoke", {"reason": "x"}),
                ("POST", "/v1/admin/agents/agent-1/domains", {"domain": "evil.example"}),
                ("POST", "/v1/admin/keys/rotate", {}),
                ("GET", "/v1/admin/agents", None),
            ):
                status, answer = await outsider(method, path, body)
                assert (status, answer["error"]) == (401, "admin_unauthorized"), (token, path)
        status, answer = await agent_call(state, server.url, "/v1/admin/agents/agent-1/revoke", {"reason": "self"})
        assert (status, answer["error"]) == (401, "admin_unauthorized")
        record = await _agent_record(server, "agent-1")
        assert (record["status"], record["domains"]) == ("inactive", [DOMAIN])
        _, keys = await admin("GET", "/v1/admin/keys")
        assert len(keys["keys"]) == 1


async def test_revoked_agent_stops_taking_requests_and_says_why(tmp_path: Path) -> None:
    """After revocation the agent's next bootstrap is refused: it stops consuming and its readiness names the reason."""
    async with control_plane(tmp_path / "cp") as server:
        state = tmp_path / "a"
        await register_agent(server, state, "agent-1")
        async with lifecycle_agent(agent_settings(state, server.url, "agent-1", bootstrap_interval=60)) as running:
            await running.bootstrapped()
            status, _ = await admin_for(server)("POST", "/v1/admin/agents/agent-1/revoke", {"reason": "host retired"})
            assert status == 200
            running.lifecycle.refresh.set()
            await wait_until(lambda: running.lifecycle.revoked is not None, "the agent learns it was revoked")
            reasons = running.agent.not_ready_reasons()
            assert any("revoked" in r and "host retired" in r for r in reasons), reasons
        status, body = await agent_call(
            state, server.url, "/v1/heartbeat", {"agent_id": "agent-1", "nonce": "x", "sent_at": 0}
        )
        assert (status, body["error"]) == (403, "agent_revoked")
        assert (await _agent_record(server, "agent-1"))["status"] == "revoked"


async def test_request_signed_with_a_rotated_out_key_is_refused_after_the_grace(tmp_path: Path) -> None:
    """After a rotation both keys verify until the grace ends; then the agent refuses the old key's requests."""
    clock = MovableClock()
    async with control_plane(tmp_path / "cp", clock=clock) as server:
        assert server.plane is not None
        state = tmp_path / "a"
        await register_agent(server, state, "agent-1")
        broker = "rotation"
        settings = agent_settings(state, server.url, "agent-1", broker=broker, bootstrap_interval=60)
        async with lifecycle_agent(settings) as running:
            await running.bootstrapped()
            old_signer: Signer = await server.plane.signer()
            status, rotated = await admin_for(server)("POST", "/v1/admin/keys/rotate", {"grace": 60})
            assert status == 200
            await running.bootstrap_now()
            assert set(running.agent.verifier.key_ids) == {old_signer.key_id, rotated["active"]}
            requester = LocalRequester.from_url(f"local://{broker}")
            async with requester:
                old = ScimClient(requester, old_signer, DOMAIN, timeout=10)
                assert (await old.call("GET", "/Users")).status == 200
                clock.offset = 120  # the grace period is over
                await running.bootstrap_now()
                assert running.agent.verifier.key_ids == [rotated["active"]]
                refused = await old.call("GET", "/Users")
                assert refused.status == 401
                assert "key" in refused.body["detail"]
                new = ScimClient(requester, await server.plane.signer(), DOMAIN, timeout=10)
                assert (await new.call("GET", "/Users")).status == 200


async def _serves(broker: str, signer: Signer) -> int:
    requester = LocalRequester.from_url(f"local://{broker}")
    async with requester:
        return (await ScimClient(requester, signer, DOMAIN, timeout=10).call("GET", "/Users")).status


async def test_agent_keeps_serving_while_the_control_plane_is_down_and_recovers(tmp_path: Path) -> None:
    """With the control plane down for several bootstrap intervals the agent answers requests, then bootstraps again."""
    cp_state, state, broker = tmp_path / "cp", tmp_path / "a", "outage"
    server = await ControlPlaneServer(service_settings(cp_state)).__aenter__()
    try:
        assert server.plane is not None
        port, signer = server.port, await server.plane.signer()
        await register_agent(server, state, "agent-1")
        settings = agent_settings(state, server.url, "agent-1", broker=broker)
        async with lifecycle_agent(settings) as running:
            await running.bootstrapped()
            await server.__aexit__(None, None, None)
            failed = running.lifecycle.failures
            await wait_until(lambda: running.lifecycle.failures >= failed + 3, "several bootstraps failed")
            assert await _serves(broker, signer) == 200
            assert running.agent.not_ready_reasons() == []  # a short outage is within stale_after
            before = running.lifecycle.bootstraps
            async with control_plane(cp_state, port=port):
                await running.bootstrapped(before + 1)
                assert running.lifecycle.last_error is None
    finally:
        await server.__aexit__(None, None, None)


async def test_agent_restarted_while_the_control_plane_is_down_serves_with_its_last_bootstrap(tmp_path: Path) -> None:
    """A restart during an outage restores the last bootstrap's signing keys and serves; it is not ready until one."""
    cp_state, state, broker = tmp_path / "cp", tmp_path / "a", "restart"
    async with control_plane(cp_state) as server:
        assert server.plane is not None
        signer = await server.plane.signer()
        await register_agent(server, state, "agent-1")
        settings = agent_settings(state, server.url, "agent-1", broker=broker)
        async with lifecycle_agent(settings) as running:
            await running.bootstrapped()
    async with lifecycle_agent(settings) as running:
        await wait_until(lambda: running.lifecycle.failures >= 2, "bootstraps failed")
        assert await _serves(broker, signer) == 200
        assert any("no successful bootstrap" in r for r in running.agent.not_ready_reasons())


async def test_certificate_renewal_replaces_the_old_certificate(tmp_path: Path) -> None:
    """A renewal over mTLS gives a new certificate; the old one is refused as superseded."""
    async with control_plane(tmp_path / "cp") as server:
        state = tmp_path / "a"
        await register_agent(server, state, "agent-1")
        old_cert = (state / "agent.pem").read_text()
        old_key = (state / "agent.key").read_bytes()
        settings = agent_settings(state, server.url, "agent-1", bootstrap_interval=60, renew_before=10**9)
        async with lifecycle_agent(settings) as running:
            await running.bootstrapped()  # the certificate is within renew_before: renewed after this bootstrap
            await wait_until(lambda: (state / "agent.pem").read_text() != old_cert, "the certificate was renewed")
            assert stat.S_IMODE((state / "agent.key").stat().st_mode) == 0o600
        stale = tmp_path / "stale"
        stale.mkdir()
        Identity(stale).save(old_key, old_cert, (state / "ca.pem").read_text())
        status, body = await agent_call(
            stale, server.url, "/v1/bootstrap", {"agent_id": "agent-1", "nonce": "s", "sent_at": 0}
        )
        assert (status, body["error"]) == (401, "certificate_superseded")


async def test_an_expired_certificate_is_named_as_such_not_reported_as_a_reset(tmp_path: Path) -> None:
    """The control plane's TLS refuses an expired client certificate with a bare end of the handshake; the
    agent says its certificate expired, when, and how to get a new one, in its log and its readiness."""
    async with control_plane(tmp_path / "cp") as server:
        state = tmp_path / "a"
        await register_agent(server, state, "agent-1")
        assert server.plane is not None
        key, csr = new_key_and_csr("agent-1")
        expired = server.plane.ca.issue_client(csr, "agent-1", lifetime=-60)  # valid until a minute ago
        Identity(state).save(key, expired.pem)
        context = ssl.create_default_context(cadata=server.plane.ca.cert_pem)
        context.load_cert_chain(state / "agent.pem", state / "agent.key")
        body = {"agent_id": "agent-1", "nonce": "n1", "sent_at": time.time()}
        with pytest.raises(ControlPlaneUnavailableError):  # presented anyway: nothing says why
            await call(server.url, "POST", "/v1/bootstrap", body, context=context, timeout=5)
        settings = agent_settings(state, server.url, "agent-1", bootstrap_interval=60)
        with capture_logs() as logs:
            async with lifecycle_agent(settings) as running:
                await wait_until(lambda: running.lifecycle.failures >= 1, "the first bootstrap failed")
                reasons = running.agent.not_ready_reasons()
        assert any("expired at" in r and "agent register" in r and "--ca-file" in r for r in reasons), reasons
        failed = [e for e in logs if e["event"] == "bootstrap failed; serving on the current endpoints"]
        assert failed, logs
        assert "expired at" in failed[0]["error"]


async def test_settings_from_the_control_plane_apply_to_the_running_agent(tmp_path: Path) -> None:
    """Live keys take effect at the next bootstrap, bad or restart-only keys are skipped, a dropped key reverts."""
    async with control_plane(tmp_path / "cp") as server:
        state = tmp_path / "agent"
        await register_agent(server, state, "agent-1")
        admin = admin_for(server)
        broker = "settings-live"
        await admin("PUT", f"/v1/admin/domains/{DOMAIN}/endpoints", {"endpoints": [{"url": f"local://{broker}"}]})
        settings = agent_settings(state, server.url, "agent-1", bootstrap_interval=60)
        async with lifecycle_agent(settings) as running:
            await running.bootstrapped()
            status, _ = await admin(
                "PATCH",
                "/v1/admin/settings",
                {
                    "scim.max_page_size": 2,
                    "signing.clock_skew": 5,
                    "dispatcher.max_deliveries": 0,  # invalid: skipped, the rest still applies
                    "signing.max_lifetime": 1e12,  # above the agent's maximum: skipped too
                    "transport.url": "amqp://elsewhere",  # needs a restart: skipped
                    "no.such": 1,
                },
            )
            assert status == 200
            await running.bootstrap_now()
            agent = running.agent
            assert running.lifecycle.remote_settings["scim.max_page_size"] == 2
            assert agent.verifier.clock_skew == 5
            assert agent.verifier.max_lifetime == settings.signing.max_lifetime
            assert agent.dispatcher.settings.max_deliveries == settings.dispatcher.max_deliveries
            assert agent.settings.transport.url == settings.transport.url
            client, requester = await _scim_client(server, broker)
            async with requester:
                page = await client.search("/Users", count="50")
                assert page["itemsPerPage"] == 2  # the agent caps count at the new max_page_size
                assert page["totalResults"] == 5

                status, _ = await admin("PATCH", "/v1/admin/settings", {"scim.max_page_size": None})
                assert status == 200
                await running.bootstrap_now()
                assert (await client.search("/Users", count="50"))["itemsPerPage"] == 5
            assert agent.verifier.clock_skew == 5  # still set by the control plane


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_agent_refuses_a_pushed_endpoint_that_serves_anonymous_callers(tmp_path: Path) -> None:
    """An allow_anonymous endpoint that reaches an agent anyway (written to the store directly) is refused with
    a warning: the agent keeps its transport, and nothing answers unauthenticated HTTP on that port."""
    async with control_plane(tmp_path / "cp") as server:
        assert server.plane is not None
        state = tmp_path / "agent"
        await register_agent(server, state, "agent-1")
        port = _free_port()
        anonymous = {"url": f"http://127.0.0.1:{port}/scim?allow_anonymous=true", "options": {}}
        await server.plane.store.set_endpoints(DOMAIN, [anonymous], time.time())
        with capture_logs() as logs:
            async with lifecycle_agent(agent_settings(state, server.url, "agent-1", bootstrap_interval=60)) as running:
                await wait_until(lambda: running.lifecycle.failures >= 1, "the pushed endpoint was refused")
                assert isinstance(running.agent.transport, LocalTransport)
                assert "allow_anonymous" in (running.lifecycle.last_error or "")
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
        refused = [e for e in logs if e["event"] == "endpoint refused; keeping the current transport"]
        assert refused
        assert refused[0]["log_level"] == "warning"
        assert "allow_anonymous" in refused[0]["problem"]


def test_a_restart_does_not_serve_a_cached_anonymous_endpoint(tmp_path: Path) -> None:
    """The last bootstrap's endpoint is used at a restart, but not when it would serve anonymous callers."""
    state = tmp_path / "agent"
    settings = agent_settings(state, "https://127.0.0.1:1", "agent-1")
    for query, expected in (("token=secret", HttpTransport), ("allow_anonymous=true", type(None))):
        endpoint = {"url": f"http://127.0.0.1:0/scim?{query}", "options": {}}
        Identity(state).save_bootstrap({"agent_id": "agent-1", "domains": [DOMAIN], "endpoints": {DOMAIN: [endpoint]}})
        assert isinstance(initial_transport(settings), expected), query
