"""Request signing: what verifies, what is refused and why, and how keys are loaded."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from hypothesis import given
from hypothesis import strategies as st
from nacl.exceptions import BadSignatureError

from protocol import replayguard, signing
from protocol.envelope import Request, ScimOperation, decode_request
from protocol.replayguard import ReplayGuard
from protocol.signing import (
    ExpiredRequestError,
    ForgedRequestError,
    ReplayedRequestError,
    Signer,
    UnknownKeyError,
    UnsignedRequestError,
    Verifier,
    load_private_key,
    load_public_key,
    private_key_text,
    public_key_text,
)

NOW = 1_700_000_000.0
SIGNER = Signer.generate("k1")
OTHER = Signer.generate("k2")


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _request(request_id: str = "r1", deadline: float = NOW + 60, **op: Any) -> Request:
    operation = ScimOperation(
        op.get("method", "DELETE"), op.get("path", "/Users/abc"), op.get("query", {}), op.get("body")
    )
    return Request(request_id, "example.com", operation, deadline)


def _verifier(clock: Clock | None = None, **options: Any) -> Verifier:
    return Verifier({"k1": SIGNER.public_key}, clock=clock or Clock(), **options)


def _wire(request: Request) -> Request:
    """What the agent sees: the request after encoding and decoding."""
    return decode_request(request.encode())


def test_signed_request_verifies_after_the_wire() -> None:
    """A request signed by a trusted key verifies after encoding and decoding."""
    request = SIGNER.sign(_request(body={"userName": "ädä", "n": [1, 2.5]}, query={"filter": 'a eq "b"'}))
    assert request.key_id == "k1"
    _verifier().verify(_wire(request))


def test_whole_second_deadline_verifies_after_the_wire() -> None:
    """A deadline given as a whole number still verifies once the wire turned it into a float."""
    request = SIGNER.sign(_request(deadline=int(NOW) + 60))
    _verifier().verify(_wire(request))


def test_unsigned_request_is_refused() -> None:
    """A request without a signature is refused with 401."""
    with pytest.raises(UnsignedRequestError, match="not signed") as caught:
        _verifier().verify(_request())
    assert caught.value.status == 401
    assert caught.value.to_scim().to_body()["status"] == "401"


def test_signature_without_key_id_is_refused() -> None:
    """A signature that names no key is treated as unsigned."""
    signed = SIGNER.sign(_request())
    with pytest.raises(UnsignedRequestError):
        _verifier().verify(dataclasses.replace(signed, key_id=None))


def test_unknown_key_is_refused() -> None:
    """A request signed with a key the agent does not trust is refused, naming the key."""
    with pytest.raises(UnknownKeyError, match="'k2'"):
        _verifier().verify(OTHER.sign(_request()))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda r: dataclasses.replace(r, operation=dataclasses.replace(r.operation, body={"x": 1})), id="body"
        ),
        pytest.param(
            lambda r: dataclasses.replace(r, operation=dataclasses.replace(r.operation, path="/Users/x")), id="path"
        ),
        pytest.param(
            lambda r: dataclasses.replace(r, operation=dataclasses.replace(r.operation, method="GET")), id="method"
        ),
        pytest.param(lambda r: dataclasses.replace(r, deadline=r.deadline + 1), id="deadline"),
        pytest.param(lambda r: dataclasses.replace(r, domain="evil.com"), id="domain"),
        pytest.param(lambda r: dataclasses.replace(r, id="r2"), id="id"),
        pytest.param(lambda r: dataclasses.replace(r, signature="AAAA"), id="garbage-signature"),
        pytest.param(lambda r: dataclasses.replace(r, signature="not base64!"), id="not-base64"),
        pytest.param(lambda r: dataclasses.replace(r, signature=OTHER.sign(r).signature), id="other-key-signature"),
        pytest.param(lambda r: dataclasses.replace(r, signature=_resized(r.signature, 63)), id="signature-63-bytes"),
        pytest.param(lambda r: dataclasses.replace(r, signature=_resized(r.signature, 65)), id="signature-65-bytes"),
        pytest.param(lambda r: dataclasses.replace(r, signature=_resized(r.signature, 32)), id="signature-32-bytes"),
    ],
)
def test_forged_request_is_refused(tamper: Any) -> None:
    """A signed request changed afterwards, or carrying someone else's signature, is refused as forged."""
    signed = SIGNER.sign(_request())
    with pytest.raises(ForgedRequestError, match="does not verify") as caught:
        _verifier().verify(_wire(tamper(signed)))
    assert caught.value.status == 401


def _resized(signature: str, size: int) -> str:
    """``signature`` cut or padded (with the first byte of a signed JSON text, ``{``) to ``size`` bytes."""
    raw = base64.b64decode(signature)
    return base64.b64encode((raw + b"{")[:size]).decode()


@given(st.binary(max_size=2048))
def test_signatures_are_those_openssl_makes_and_checks(message: bytes) -> None:
    """libsodium signs and checks the same Ed25519 as ``cryptography``: a service or agent on either verifies
    the other's signatures, and a signature is byte for byte the same (RFC 8032 is deterministic)."""
    ours = SIGNER._sign(message)
    assert ours == SIGNER.private_key.sign(message)
    SIGNER.public_key.verify(ours, message)  # cryptography's check of ours (raises if it fails)
    raw_public = SIGNER.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signing._check(raw_public, SIGNER.private_key.sign(message), message)  # ours of cryptography's
    with pytest.raises(BadSignatureError):
        signing._check(raw_public, ours, message + b"x")


def test_a_signature_of_another_length_never_shifts_the_message_checked() -> None:
    """libsodium checks one buffer, signature then message: 63 bytes of a genuine signature of ``m[1:]``
    followed by ``m`` would read as that signature over ``m[1:]`` if the length were not checked first."""
    raw_public = SIGNER.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for n in range(10_000):  # about 256 tries find a signature whose last byte is the message's first
        message = b'{"n":%d}' % n
        signature = SIGNER._sign(message[1:])
        if signature[63] == message[0]:
            break
    with pytest.raises(BadSignatureError, match="64 bytes"):
        signing._check(raw_public, signature[:63], message)


def test_expired_request_is_refused_with_408() -> None:
    """A request past its deadline (beyond the clock skew) is refused with 408."""
    clock = Clock()
    verifier = _verifier(clock, clock_skew=5)
    request = SIGNER.sign(_request(deadline=NOW - 4))
    verifier.verify(request)  # within the skew
    clock.now += 2
    with pytest.raises(ExpiredRequestError, match="expired") as caught:
        verifier.verify(SIGNER.sign(_request("r2", deadline=NOW - 4)))
    assert caught.value.status == 408


def test_deadline_too_far_ahead_is_refused() -> None:
    """A deadline further away than max_lifetime (plus skew) is refused, so ids need not be kept forever."""
    verifier = _verifier(clock_skew=0, max_lifetime=100)
    verifier.verify(SIGNER.sign(_request("near", deadline=NOW + 100)))
    with pytest.raises(ExpiredRequestError, match="beyond the 100s"):
        verifier.verify(SIGNER.sign(_request("far", deadline=NOW + 101)))


def test_fresh_copy_of_an_accepted_request_is_a_replay() -> None:
    """The same signed request arriving again as a new message is refused with 409."""
    verifier = _verifier()
    request = SIGNER.sign(_request())
    verifier.verify(_wire(request))
    with pytest.raises(ReplayedRequestError, match="replay") as caught:
        verifier.verify(_wire(request))
    assert caught.value.status == 409


def test_redelivery_is_not_a_replay() -> None:
    """The transport's redelivery of an accepted request passes, for its idempotency store to answer."""
    verifier = _verifier()
    request = SIGNER.sign(_request())
    verifier.verify(request)
    verifier.verify(request, redelivered=True)
    verifier.verify(request, redelivered=True)


def test_refused_request_is_not_remembered() -> None:
    """A forged copy does not burn the id: the genuine request still verifies afterwards."""
    verifier = _verifier()
    genuine = SIGNER.sign(_request())
    with pytest.raises(ForgedRequestError):
        verifier.verify(dataclasses.replace(genuine, signature=OTHER.sign(genuine).signature))
    verifier.verify(genuine)


def test_replay_guard_forgets_ids_after_their_deadline() -> None:
    """Ids are forgotten once their deadline (plus skew) passed: memory stays bounded by time."""
    clock = Clock()
    verifier = _verifier(clock, clock_skew=0)
    verifier.verify(SIGNER.sign(_request("old", deadline=NOW + 1)))
    clock.now += 10
    verifier.verify(SIGNER.sign(_request("new", deadline=NOW + 60)))
    assert not verifier.replays.seen("old")
    assert verifier.replays.seen("new")


def test_set_keys_revokes_a_key_at_once() -> None:
    """A key left out of ``set_keys`` is refused on the very next request; a new key is trusted."""
    verifier = _verifier()
    verifier.verify(SIGNER.sign(_request("a")))
    verifier.set_keys({"k2": OTHER.public_key})
    assert verifier.key_ids == ["k2"]
    with pytest.raises(UnknownKeyError):
        verifier.verify(SIGNER.sign(_request("b")))
    verifier.verify(OTHER.sign(_request("c")))


# ------------------------------------------------------------------------------------- key loading


def test_keys_load_from_base64() -> None:
    """The base64 forms printed by ``keys generate`` load back into working keys."""
    private = load_private_key(private_key_text(SIGNER.private_key))
    public = load_public_key(public_key_text(SIGNER.public_key))
    request = Signer("k1", private).sign(_request())
    Verifier({"k1": public}, clock=Clock()).verify(request)


def test_keys_load_from_pem() -> None:
    """PKCS8 and SubjectPublicKeyInfo PEM keys load (with surrounding whitespace)."""
    private_pem = SIGNER.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = SIGNER.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    request = Signer("k1", load_private_key(f"\n{private_pem}\n")).sign(_request())
    Verifier({"k1": load_public_key(f"  {public_pem}")}, clock=Clock()).verify(request)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not base64!", "neither PEM nor base64"),
        (base64.b64encode(b"short").decode(), "must be 32 bytes, got 5"),
        (base64.b64encode(bytes(64)).decode(), "must be 32 bytes, got 64"),
    ],
)
def test_bad_key_text_is_refused_with_a_reason(text: str, problem: str) -> None:
    """Key text that is neither PEM nor 32 base64 bytes is refused, saying which."""
    with pytest.raises(ValueError, match=problem):
        load_public_key(text)
    with pytest.raises(ValueError, match=problem.replace("public", "private")):
        load_private_key(text)


def test_pem_of_another_algorithm_is_refused() -> None:
    """An EC key in PEM is refused as not Ed25519."""
    ec = generate_private_key(SECP256R1())
    public_pem = ec.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = ec.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        load_public_key(public_pem.decode())
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        load_private_key(private_pem.decode())


def test_broken_pem_is_refused() -> None:
    """A PEM block with a damaged body is refused with a ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's own message varies by version
        load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")


# ------------------------------------------------------------------------------------- property

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_text = st.text(min_size=1, max_size=20)
_changes = st.one_of(
    st.tuples(st.just("id"), _text),
    st.tuples(st.just("domain"), _text),
    st.tuples(st.just("deadline"), st.floats(NOW - 1, NOW + 600)),
    st.tuples(st.just("reply_to"), st.none() | _text),
    st.tuples(st.just("method"), st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"])),
    st.tuples(st.just("path"), _text.map(lambda s: "/" + s)),
    st.tuples(st.just("query"), st.dictionaries(_text, st.text(max_size=10), max_size=3)),
    st.tuples(st.just("body"), _json),
)


@given(change=_changes)
def test_any_change_to_a_signed_request_breaks_verification(change: tuple[str, Any]) -> None:
    """Changing any one field of a signed request (to a different value) makes it fail verification."""
    name, value = change
    signed = SIGNER.sign(_request(body={"userName": "ada"}, query={"attributes": "id"}))
    if name in {"method", "path", "query", "body"}:
        if getattr(signed.operation, name) == value and type(getattr(signed.operation, name)) is type(value):
            return
        tampered = dataclasses.replace(signed, operation=dataclasses.replace(signed.operation, **{name: value}))
    else:
        if getattr(signed, name) == value:
            return
        tampered = dataclasses.replace(signed, **{name: value})
    with pytest.raises(ForgedRequestError):
        _verifier().verify(_wire(tampered))


def test_a_copy_of_a_request_let_go_by_a_full_memory_is_still_refused() -> None:
    """With more live requests than the exact memory holds, a copy of one it let go (into the Bloom filters) is
    refused 503 (a filter cannot say for certain, so the service sends a new request); a redelivery is still
    let past, and new requests pass."""
    verifier = _verifier(replay_memory=2)
    first, *others = [SIGNER.sign(_request(f"r{n}", deadline=NOW + 60 + n)) for n in range(3)]
    for request in (first, *others):
        verifier.verify(_wire(request))
    assert verifier.replays.spilled == 1
    with pytest.raises(signing.UnprovableFreshnessError, match="may be a replay") as caught:
        verifier.verify(_wire(first))
    assert caught.value.status == 503
    verifier.verify(_wire(first), redelivered=True)
    verifier.verify(_wire(SIGNER.sign(_request("later", deadline=NOW + 30))))


def test_a_request_due_within_ids_forgotten_altogether_is_refused_503() -> None:
    """Once the spilled ids outgrow their own bound, the bucket due first is forgotten: a request due within it
    cannot be told from a replay and is refused 503; one due later passes."""
    verifier = _verifier()
    verifier.replays = ReplayGuard(max_entries=1, max_spill_bytes=replayguard.FILTER_BITS // 8)
    for number, deadline in enumerate([NOW + 40, NOW + 100, NOW + 400]):
        verifier.verify(_wire(SIGNER.sign(_request(f"r{number}", deadline=deadline))))
    with pytest.raises(signing.UnprovableFreshnessError, match="may be a replay") as caught:
        verifier.verify(_wire(SIGNER.sign(_request("early", deadline=NOW + 35))))
    assert caught.value.status == 503
    verifier.verify(_wire(SIGNER.sign(_request("late", deadline=NOW + 500))))
