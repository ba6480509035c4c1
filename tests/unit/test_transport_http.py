"""The http transport: the Transport behaviour suite, plus authentication, limits and SCIM error answers."""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.envelope import EnvelopeError, decode_request, decode_response
from protocol.errors import ERROR_SCHEMA
from tests.contract.transport_suite import Responder, TransportSuite, answer, echo, make_envelope
from transports.base import Delivery, Requester, Transport, TransportBrokenError
from transports.http import AuthNotConfiguredError, HttpRequester, HttpTransport
from transports.registry import TransportSettingsError, create_requester, create_transport

TOKEN = "s3cret-test-token"
DOMAIN = "http.example.test"


def _http(transport: Transport) -> HttpTransport:
    assert isinstance(transport, HttpTransport)
    return transport


class TestHttpTransport(TransportSuite):
    supports_redelivery = False  # an HTTP request is answered once; the client retries, not the transport
    carries_raw_payloads = False  # HttpRequester sends SCIM calls built from valid envelopes only

    def new_transport(self) -> Transport:
        options = {"token": TOKEN, "request_timeout": 60}
        return create_transport("http://127.0.0.1:0/scim/v2", domains=self.domains, options=options)

    def new_requester(self, transport: Transport) -> Requester:
        return create_requester(_http(transport).url, options={"token": TOKEN})


@pytest.fixture
async def server() -> AsyncIterator[HttpTransport]:
    options = {"token": TOKEN, "max_body_size": 1000}
    async with create_transport("http://127.0.0.1:0/scim/v2", domains=[DOMAIN], options=options) as transport:
        yield _http(transport)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _scim_error(answer: aiohttp.ClientResponse) -> dict[str, Any]:
    assert answer.content_type == "application/scim+json"
    body: dict[str, Any] = json.loads(await answer.read())
    assert body["schemas"] == [ERROR_SCHEMA]
    assert body["status"] == str(answer.status)
    return body


def test_refuses_to_start_without_auth() -> None:
    """With no token, no client CA and no ``allow_anonymous``, the server is not even made, and says why."""
    with pytest.raises(AuthNotConfiguredError, match="allow_anonymous"):
        create_transport("http://127.0.0.1:0/scim/v2", domains=[DOMAIN])


def test_unreadable_token_file_names_the_setting(tmp_path: Path) -> None:
    """A token_file that cannot be read is a settings error naming token_file, not an OSError."""
    missing = tmp_path / "missing-token"
    with pytest.raises(TransportSettingsError, match="token_file: cannot read"):
        create_transport("http://127.0.0.1:0/", domains=[DOMAIN], options={"token_file": str(missing)})


async def test_anonymous_only_when_asked(client: aiohttp.ClientSession) -> None:
    """``allow_anonymous: true`` serves callers without credentials."""
    options = {"allow_anonymous": True}
    transport = _http(create_transport("http://127.0.0.1:0/scim/v2", domains=[DOMAIN], options=options))
    await transport.connect()
    try:
        async with Responder(transport), client.get(transport.url + "/Users") as answer:
            assert answer.status == 200
    finally:
        await transport.close()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
async def test_bad_or_missing_token_is_401(
    server: HttpTransport, client: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """A request without the right bearer token gets a SCIM 401 and never reaches the consumer."""
    async with Responder(server) as responder, client.get(server.url + "/Users", headers=headers) as answer:
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        await _scim_error(answer)
    assert responder.seen == []


async def test_token_file_is_read(tmp_path: Path, client: aiohttp.ClientSession) -> None:
    """The bearer token can come from a file (so it stays out of the URL and the config)."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    options = {"token_file": str(token_file)}
    transport = _http(create_transport("http://127.0.0.1:0/", domains=[DOMAIN], options=options))
    await transport.connect()
    try:
        async with Responder(transport), client.get(transport.url + "/Users", headers=AUTH) as answer:
            assert answer.status == 200
    finally:
        await transport.close()


async def test_request_becomes_trusted_envelope(server: HttpTransport, client: aiohttp.ClientSession) -> None:
    """Method, path below the base, query and JSON body arrive as a trusted request envelope for the first domain."""
    async with (
        Responder(server) as responder,
        client.patch(server.url + "/Users/42?attributes=userName", json={"Operations": []}, headers=AUTH) as answer,
    ):
        assert answer.status == 200
    delivery = responder.seen[0]
    request = decode_request(delivery.payload)
    assert delivery.trusted
    assert request.domain == DOMAIN
    assert (request.operation.method, request.operation.path) == ("PATCH", "/Users/42")
    assert request.operation.query == {"attributes": "userName"}
    assert request.operation.body == {"Operations": []}


async def test_body_over_limit_is_413(server: HttpTransport, client: aiohttp.ClientSession) -> None:
    """A body over ``max_body_size`` gets a SCIM 413, whether or not it announces its length."""

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 100

    async with Responder(server) as responder:
        async with client.post(server.url + "/Users", data=b"x" * 2000, headers=AUTH) as answer:
            assert answer.status == 413
            await _scim_error(answer)
        async with client.post(server.url + "/Users", data=chunked(), headers=AUTH) as answer:
            assert answer.status == 413
            await _scim_error(answer)
    assert responder.seen == []


async def test_malformed_json_is_400_invalid_syntax(server: HttpTransport, client: aiohttp.ClientSession) -> None:
    """A body that is not JSON gets SCIM 400 ``invalidSyntax`` from the transport itself."""
    async with (
        Responder(server) as responder,
        client.post(server.url + "/Users", data=b'{"userName": ', headers=AUTH) as answer,
    ):
        assert answer.status == 400
        assert (await _scim_error(answer))["scimType"] == "invalidSyntax"
    assert responder.seen == []


async def test_outside_base_path_is_404(server: HttpTransport, client: aiohttp.ClientSession) -> None:
    """Paths outside the configured base path are not SCIM calls for this agent."""
    async with client.get(server.url.removesuffix("/scim/v2") + "/other/Users", headers=AUTH) as answer:
        assert answer.status == 404
        await _scim_error(answer)


async def test_created_answer_carries_location_and_etag(server: HttpTransport, client: aiohttp.ClientSession) -> None:
    """A 201 reply becomes an HTTP 201 with ``Location`` and ``ETag`` taken from the resource's meta."""
    resource = {"id": "7", "meta": {"location": "https://x.test/scim/v2/Users/7", "version": 'W/"3"'}}

    async def created(responder: Responder, delivery: Delivery) -> None:
        await answer(delivery, status=201, body=resource)

    async with (
        Responder(server, created),
        client.post(server.url + "/Users", json={"userName": "ada"}, headers=AUTH) as reply,
    ):
        assert reply.status == 201
        assert reply.headers["Location"] == "https://x.test/scim/v2/Users/7"
        assert reply.headers["ETag"] == 'W/"3"'
        assert reply.content_type == "application/scim+json"
        assert json.loads(await reply.read()) == resource


@pytest.mark.parametrize(("outcome", "status"), [("retry_later", 503), ("dead_letter", 400)])
async def test_settling_without_reply_answers_error(
    server: HttpTransport, client: aiohttp.ClientSession, outcome: str, status: int
) -> None:
    """``retry_later`` without a reply answers 503 and ``dead_letter`` answers 400, with the reason."""

    async def settle(responder: Responder, delivery: Delivery) -> None:
        await getattr(delivery, outcome)("the reason given")

    async with Responder(server, settle), client.get(server.url + "/Users", headers=AUTH) as answer:
        assert answer.status == status
        assert (await _scim_error(answer))["detail"] == "the reason given"


async def test_after_stop_consuming_new_requests_get_503(server: HttpTransport, client: aiohttp.ClientSession) -> None:
    """A draining agent turns new requests away with 503 so the client retries elsewhere."""
    await server.stop_consuming()
    async with client.get(server.url + "/Users", headers=AUTH) as answer:
        assert answer.status == 503
        assert answer.headers["Retry-After"] == "1"


async def test_requester_speaks_plain_scim(server: HttpTransport) -> None:
    """``HttpRequester`` turns an envelope into the SCIM call and the HTTP answer into a response envelope."""
    async with create_requester(server.url, options={"token": TOKEN}) as requester, Responder(server):
        request_id, payload = make_envelope(DOMAIN, "/Groups", {"displayName": "ops"})
        response = decode_response(await requester.request(DOMAIN, request_id, payload, timeout=30))
    assert response.request_id == request_id
    assert response.status == 200
    assert response.body["body"] == {"displayName": "ops"}


async def test_requester_reports_unreachable_server_as_broken() -> None:
    """A refused connection is a ``TransportBrokenError`` (recoverable), not a hang or a bare aiohttp error."""
    async with HttpRequester("http://127.0.0.1:9/scim/v2") as requester:
        request_id, payload = make_envelope(DOMAIN, "/Users")
        with pytest.raises(TransportBrokenError):
            await requester.request(DOMAIN, request_id, payload, timeout=30)


async def test_https_needs_a_certificate() -> None:
    """An ``https://`` URL without ``tls_cert``/``tls_key`` is a configuration error at connect."""
    transport = create_transport("https://127.0.0.1:0/", domains=[DOMAIN], options={"token": TOKEN})
    with pytest.raises(TransportSettingsError, match="tls_cert"):
        await transport.connect()


# ---- mTLS with a throwaway CA ----------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None, *, server: bool = False
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    signer_key, issuer_name = (issuer[0], issuer[1].subject) if issuer else (key, _name(subject))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[0].public_key()), critical=False
        )
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        if server:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
    return key, builder.sign(signer_key, hashes.SHA256())


def _write(directory: Path, name: str, pair: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> tuple[str, str]:
    key, cert = pair
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, tuple[str, str]]:
    ca = _certificate("cloudprov test CA", None)
    rogue_ca = _certificate("someone else's CA", None)
    return {
        "ca": _write(tmp_path, "ca", ca),
        "server": _write(tmp_path, "server", _certificate("127.0.0.1", ca, server=True)),
        "client": _write(tmp_path, "client", _certificate("provisioning-service", ca)),
        "rogue": _write(tmp_path, "rogue", _certificate("intruder", rogue_ca)),
    }


@pytest.fixture
async def mtls_server(pki: dict[str, tuple[str, str]]) -> AsyncIterator[HttpTransport]:
    cert, key = pki["server"]
    options = {"tls_cert": cert, "tls_key": key, "tls_client_ca": pki["ca"][0]}
    async with create_transport("https://127.0.0.1:0/scim/v2", domains=[DOMAIN], options=options) as transport:
        yield _http(transport)


def _mtls_requester(server: HttpTransport, pki: dict[str, tuple[str, str]], identity: str | None) -> Requester:
    options: dict[str, str] = {"tls_ca": pki["ca"][0]}
    if identity is not None:
        options["tls_cert"], options["tls_key"] = pki[identity]
    return create_requester(server.url, options=options)


async def test_mtls_accepts_a_client_certificate_from_the_ca(
    mtls_server: HttpTransport, pki: dict[str, tuple[str, str]]
) -> None:
    """With mTLS configured, a client presenting a certificate signed by the client CA is served."""
    async with _mtls_requester(mtls_server, pki, "client") as requester, Responder(mtls_server, echo):
        request_id, payload = make_envelope(DOMAIN, "/Users")
        response = decode_response(await requester.request(DOMAIN, request_id, payload, timeout=30))
    assert response.status == 200


@pytest.mark.parametrize("identity", [None, "rogue"])
async def test_mtls_refuses_missing_or_foreign_certificate(
    mtls_server: HttpTransport, pki: dict[str, tuple[str, str]], identity: str | None
) -> None:
    """Without a client certificate, or with one from another CA, the TLS handshake fails and nothing is served."""
    async with _mtls_requester(mtls_server, pki, identity) as requester, Responder(mtls_server) as responder:
        request_id, payload = make_envelope(DOMAIN, "/Users")
        with pytest.raises(TransportBrokenError):
            await requester.request(DOMAIN, request_id, payload, timeout=30)
    assert responder.seen == []


async def test_invalid_response_envelope_is_500(server: HttpTransport, client: aiohttp.ClientSession) -> None:
    """A reply that is not a response envelope answers the caller 500 and raises to the agent."""
    errors: list[EnvelopeError] = []

    async def garbage(responder: Responder, delivery: Delivery) -> None:
        try:
            await delivery.reply(b"not an envelope")
        except EnvelopeError as exc:
            errors.append(exc)

    async with Responder(server, garbage), client.get(server.url + "/Users", headers=AUTH) as answer:
        assert answer.status == 500
        await _scim_error(answer)
    assert len(errors) == 1
