"""Batch signatures: one Ed25519 signature over a Merkle root of the requests sent together."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import signing
from protocol.envelope import EnvelopeError, Request, ScimOperation, canonical, decode_request, request_fields
from protocol.signing import (
    BATCH_CONTEXT,
    ForgedRequestError,
    SignatureBatcher,
    Signer,
    UnknownKeyError,
    Verifier,
    merkle_root,
    merkle_tree,
)

NOW = 1_700_000_000.0
SIGNER = Signer.generate("k1")


def _request(number: int, **changes: Any) -> Request:
    operation = ScimOperation("GET", "/Users", {"filter": f'userName eq "user{number}"'})
    return dataclasses.replace(Request(f"r{number}", "example.com", operation, NOW + 60), **changes)


def _verifier() -> Verifier:
    return Verifier({"k1": SIGNER.public_key}, clock=lambda: NOW)


def _wire(request: Request) -> Request:
    return decode_request(request.encode())


def _fields(number: int) -> dict[str, Any]:
    return _request(number).signed_fields()


def _decoded(envelopes: list[bytes]) -> list[Request]:
    return [decode_request(envelope) for envelope in envelopes]


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The messages whose Ed25519 signature the verifier checks, in order (each check still made)."""
    checked: list[bytes] = []
    check = signing.crypto_sign_open  # libsodium's, as the module calls it (compiled, it calls its own functions
    # directly, so the count is taken at the library call)

    def counting(signed: bytes, public: bytes) -> bytes:
        checked.append(signed[64:])  # libsodium takes the signature and the message as one buffer
        return check(signed, public)

    monkeypatch.setattr(signing, "crypto_sign_open", counting)
    return checked


@pytest.mark.parametrize("size", [2, 3, 5, 8, 13, 64])
def test_every_request_of_a_batch_verifies_with_one_signature_check(size: int, checks: list[bytes]) -> None:
    """Each request carries its own proof; the root's signature is checked once for the batch."""
    signed = SIGNER.sign_batch([_request(n) for n in range(size)])
    assert len({request.signature for request in signed}) == 1
    verifier = _verifier()
    for request in signed:
        verifier.verify(_wire(request))
    assert len(checks) == 1
    assert checks[0].startswith(BATCH_CONTEXT)


def test_a_batch_of_one_is_signed_plainly() -> None:
    (request,) = SIGNER.sign_batch([_request(1)])
    assert request.proof is None
    _verifier().verify(_wire(request))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: dataclasses.replace(r, operation=ScimOperation("DELETE", "/Users/abc")),
        lambda r: dataclasses.replace(r, domain="other.example"),
        lambda r: dataclasses.replace(r, deadline=r.deadline + 1),
        lambda r: dataclasses.replace(r, proof=r.proof[:-1]),
        lambda r: dataclasses.replace(r, proof=(*r.proof, r.proof[0])),
        lambda r: dataclasses.replace(r, proof=({"l": "r", "r": "l"}[r.proof[0][0]] + r.proof[0][1:], *r.proof[1:])),
        lambda r: dataclasses.replace(r, proof=("r:AAAA", *r.proof[1:])),
        lambda r: dataclasses.replace(r, proof=("x:" + r.proof[0][2:], *r.proof[1:])),
        lambda r: dataclasses.replace(r, proof=None),
    ],
    ids=["operation", "domain", "deadline", "short-proof", "long-proof", "side", "bad-hash", "bad-side", "no-proof"],
)
def test_a_changed_request_or_proof_is_forged_even_after_its_batch_verified(tamper: Any) -> None:
    """A verified root does not vouch for anything that does not hash to it."""
    signed = SIGNER.sign_batch([_request(n) for n in range(5)])
    verifier = _verifier()
    verifier.verify(_wire(signed[0]))
    with pytest.raises(ForgedRequestError):
        verifier.verify(_wire(tamper(signed[3])))


def test_a_proof_from_another_batch_is_forged() -> None:
    first = SIGNER.sign_batch([_request(n) for n in range(4)])
    second = SIGNER.sign_batch([_request(n) for n in range(10, 14)])
    verifier = _verifier()
    verifier.verify(_wire(first[0]))
    verifier.verify(_wire(second[0]))
    mixed = dataclasses.replace(first[1], proof=second[1].proof)
    with pytest.raises(ForgedRequestError):
        verifier.verify(_wire(mixed))
    with pytest.raises(ForgedRequestError):
        verifier.verify(_wire(dataclasses.replace(first[1], signature=second[1].signature)))


def test_a_root_signature_never_verifies_as_a_plain_request_signature() -> None:
    """The context prefix keeps the two kinds of signed message apart."""
    signed = SIGNER.sign_batch([_request(n) for n in range(2)])
    with pytest.raises(ForgedRequestError):
        _verifier().verify(_wire(dataclasses.replace(signed[0], proof=None)))
    assert not BATCH_CONTEXT.startswith(b"{")


def test_revoking_the_key_revokes_verified_batches() -> None:
    """A cached root is trusted only while its key is: replacing the keys forgets every root."""
    signed = SIGNER.sign_batch([_request(n) for n in range(3)])
    verifier = _verifier()
    verifier.verify(_wire(signed[0]))
    verifier.set_keys({})
    with pytest.raises(UnknownKeyError):
        verifier.verify(_wire(signed[1]))
    verifier.set_keys({"k1": Signer.generate("k1").public_key})  # the same id, another key
    with pytest.raises(ForgedRequestError):
        verifier.verify(_wire(signed[2]))


def test_the_root_cache_is_bounded() -> None:
    verifier = _verifier()
    verifier.max_roots = 3
    for batch in range(6):
        for request in SIGNER.sign_batch([_request(batch * 10 + n) for n in range(2)]):
            verifier.verify(_wire(request))
    assert len(verifier._roots) == 3


def test_a_malformed_proof_is_an_envelope_error() -> None:
    raw = _request(1).with_signature("k1", "c2ln", ("r:AAAA",)).to_dict()
    for proof in ["r:AAAA", [1, 2], ["r:AAAA"] * 33]:
        raw["proof"] = proof
        with pytest.raises(EnvelopeError, match="proof"):
            decode_request(json.dumps(raw).encode())


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70))
def test_every_proof_climbs_to_the_root(leaves: list[bytes]) -> None:
    root, proofs = merkle_tree(leaves)
    assert all(merkle_root(leaf, proof) == root for leaf, proof in zip(leaves, proofs, strict=True))


async def test_requests_signed_in_one_loop_turn_share_a_signature() -> None:
    batcher = SignatureBatcher()
    signed = _decoded(await asyncio.gather(*(batcher.sign_and_encode(SIGNER, _fields(n)) for n in range(20))))
    assert len({request.signature for request in signed}) == 1
    assert all(request.proof for request in signed)
    verifier = _verifier()
    for request in signed:
        verifier.verify(_wire(request))
    alone = decode_request(await batcher.sign_and_encode(SIGNER, _fields(99)))
    assert alone.proof is None
    verifier.verify(_wire(alone))


async def test_batches_are_bounded_and_grouped_by_signer() -> None:
    other = Signer.generate("k2")
    batcher = SignatureBatcher(max_batch=8)
    signed = _decoded(
        await asyncio.gather(
            *(batcher.sign_and_encode(SIGNER, _fields(n)) for n in range(20)),
            batcher.sign_and_encode(other, _fields(50)),
        )
    )
    mine = signed[:20]
    assert len({request.signature for request in mine}) == 3  # 8 + 8 + 4
    assert signed[20].key_id == "k2"
    assert signed[20].proof is None
    verifier = Verifier({"k1": SIGNER.public_key, "k2": other.public_key}, clock=lambda: NOW)
    for request in signed:
        verifier.verify(_wire(request))


async def test_a_cancelled_caller_does_not_hold_up_the_batch() -> None:
    batcher = SignatureBatcher()
    waiting = [asyncio.ensure_future(batcher.sign_and_encode(SIGNER, _fields(n))) for n in range(4)]
    await asyncio.sleep(0)  # every caller is now waiting for the flush
    waiting[1].cancel()
    done = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    verifier = _verifier()
    for envelope in (done[0], done[2], done[3]):
        assert isinstance(envelope, bytes)
        verifier.verify(decode_request(envelope))


async def test_requests_sent_in_later_turns_join_a_lingering_batch() -> None:
    """Callers with others in flight wait for them: replies arriving one turn apart still share a signature."""
    batcher = SignatureBatcher(linger=60.0)
    expected = round(2 / signing.COMPLETE_SHARE)  # two requests are that share of them, three more
    first = asyncio.ensure_future(batcher.sign_and_encode(SIGNER, _fields(0), expected=expected))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not first.done()  # more are expected: it waits for some of them
    second = asyncio.ensure_future(batcher.sign_and_encode(SIGNER, _fields(1), expected=expected))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not second.done()  # two: not yet more than COMPLETE_SHARE of the expected
    third = asyncio.ensure_future(batcher.sign_and_encode(SIGNER, _fields(2), expected=expected))
    # three are more than COMPLETE_SHARE of the expected: signed at the end of this turn, not after 60 s
    signed = _decoded(await asyncio.wait_for(asyncio.gather(first, second, third), timeout=10))
    assert len({request.signature for request in signed}) == 1
    verifier = _verifier()
    for request in signed:
        verifier.verify(_wire(request))


async def test_a_request_with_nothing_else_in_flight_does_not_linger() -> None:
    batcher = SignatureBatcher(linger=60.0)
    alone = decode_request(await asyncio.wait_for(batcher.sign_and_encode(SIGNER, _fields(0)), timeout=10))
    assert alone.proof is None
    _verifier().verify(_wire(alone))


async def test_a_lingering_batch_is_signed_when_the_wait_runs_out() -> None:
    batcher = SignatureBatcher(linger=0.01)
    signed = _decoded(
        await asyncio.wait_for(
            asyncio.gather(
                batcher.sign_and_encode(SIGNER, _fields(0), expected=5),
                batcher.sign_and_encode(SIGNER, _fields(1), expected=5),
            ),
            timeout=10,
        )
    )
    assert len({request.signature for request in signed}) == 1  # both waited together, the rest never came
    verifier = _verifier()
    for request in signed:
        verifier.verify(_wire(request))


def test_folding_with_a_memo_climbs_to_the_same_root_with_fewer_hashes() -> None:
    """A memo shared by the requests of a batch changes no root and saves the shared upper steps."""
    leaves = [hashlib.sha256(bytes([n])).digest() for n in range(64)]
    root, proofs = merkle_tree(leaves)
    memo: dict[bytes, tuple[str, bytes]] = {}
    assert all(merkle_root(leaf, proof, memo) == root for leaf, proof in zip(leaves, proofs, strict=True))
    assert len(memo) == 2 * (64 - 1)  # against 64 x 6 steps folded one by one
    assert all(merkle_root(leaf, proof, memo) == root for leaf, proof in zip(leaves, proofs, strict=True))


def test_a_memo_hashes_each_inner_node_of_a_batch_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folding a whole batch with one memo hashes each of its n - 1 inner nodes once, whatever the order."""
    leaves = [hashlib.sha256(bytes([n])).digest() for n in range(37)]  # odd levels carry nodes up
    root, proofs = merkle_tree(leaves)
    hashed: list[bytes] = []
    real = hashlib.sha256

    def counting(data: bytes) -> Any:
        hashed.append(data)
        return real(data)

    monkeypatch.setattr(signing.hashlib, "sha256", counting)
    for order in (range(37), reversed(range(37))):
        memo: dict[bytes, tuple[str, bytes]] = {}
        hashed.clear()
        assert all(merkle_root(leaves[n], proofs[n], memo) == root for n in order)
        assert len(hashed) == len(set(hashed)) == 37 - 1


def test_a_memo_does_not_let_a_forged_step_through() -> None:
    """A step is remembered by its exact text and node: a changed sibling is folded anew and misses the root."""
    leaves = [hashlib.sha256(bytes([n])).digest() for n in range(8)]
    root, proofs = merkle_tree(leaves)
    memo: dict[bytes, tuple[str, bytes]] = {}
    merkle_root(leaves[0], proofs[0], memo)
    forged = ("r:" + base64.b64encode(bytes(32)).decode(), *proofs[0][1:])
    assert merkle_root(leaves[0], forged, memo) != root
    with pytest.raises(ValueError, match="malformed"):
        merkle_root(leaves[0], ("x" + proofs[0][0][1:], *proofs[0][1:]), memo)


def test_the_rest_of_a_verified_batch_does_not_decode_its_signature_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's signature text is decoded for its one Ed25519 check, not once per request."""
    signed = SIGNER.sign_batch([_request(n) for n in range(5)])
    verifier = _verifier()
    decoded: list[object] = []
    real = base64.b64decode

    def counting(text: Any, **options: Any) -> bytes:
        decoded.append(text)
        return real(text, **options)

    monkeypatch.setattr(signing.base64, "b64decode", counting)
    for request in signed:
        verifier.verify(_wire(request))
    assert len(decoded) == 1


@pytest.mark.parametrize("signature", ["not base64!", "AAAA"])
def test_another_signature_text_on_a_verified_root_is_checked_afresh(signature: str) -> None:
    """A remembered root vouches only for the signature text that verified over it."""
    signed = SIGNER.sign_batch([_request(n) for n in range(5)])
    verifier = _verifier()
    verifier.verify(_wire(signed[0]))
    with pytest.raises(ForgedRequestError):
        verifier.verify(_wire(dataclasses.replace(signed[1], signature=signature)))


@pytest.mark.parametrize("size", [1, 2, 5, 37])
def test_encoding_a_batch_makes_the_bytes_of_signing_it_then_encoding_each(size: int) -> None:
    """``encode_batch`` (fields laid out once) sends exactly what ``sign_batch`` and ``encode`` make."""
    requests = [
        _request(0, key_id="another key"),  # re-attributed to the signer's key
        *(_request(n, key_id="k1") for n in range(1, size)),
    ][:size]
    if size > 2:
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "remove"}]}
        requests[2] = _request(2, key_id="k1", reply_to="inbox", operation=ScimOperation("PATCH", "/Users/2", {}, body))
    assert SIGNER.encode_batch(requests) == [request.encode() for request in SIGNER.sign_batch(requests)]


def test_encoding_a_batch_refuses_a_non_finite_body_before_signing() -> None:
    """A NaN body is refused as ``encode`` refuses it, not signed and sent as null."""
    bad = _request(1, operation=ScimOperation("POST", "/Users", {}, {"n": [float("nan")]}))
    with pytest.raises(ValueError, match="finite"):
        SIGNER.encode_batch([_request(0), bad])


async def test_a_non_finite_body_fails_its_caller_alone() -> None:
    """One caller's unsendable body does not fail the others of its batch."""
    batcher = SignatureBatcher()
    bad = _request(1, operation=ScimOperation("POST", "/Users", {}, {"n": float("inf")}))
    good, refused, other = await asyncio.gather(
        batcher.sign_and_encode(SIGNER, _fields(0), expected=2),
        batcher.sign_and_encode(SIGNER, bad.signed_fields(), expected=2),
        batcher.sign_and_encode(SIGNER, _fields(2), expected=2),
        return_exceptions=True,
    )
    assert isinstance(refused, ValueError)
    verifier = _verifier()
    for envelope in (good, other):
        assert isinstance(envelope, bytes)
        verifier.verify(decode_request(envelope))


def test_a_requesters_fields_are_a_requests_signed_fields() -> None:
    """``request_fields`` (what ScimClient.call signs) lays a request out as ``Request.signed_fields`` does."""
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": []}
    operation = ScimOperation("PATCH", "/Users/7", {"attributes": "id"}, body)
    request = Request("r7", "example.com", operation, 1_767_225_600, "k1", reply_to="inbox")
    fields = request_fields("r7", "example.com", "PATCH", "/Users/7", {"attributes": "id"}, body, 1_767_225_600, "k1",
                            "inbox")  # fmt: skip
    assert list(fields.items()) == list(request.signed_fields().items())  # same keys in the same order
    assert canonical(fields) == request.signed_part()
    assert SIGNER.encode_fields([fields]) == [SIGNER.sign(request).encode()]


def test_a_request_of_another_version_signs_its_own_version() -> None:
    """``Request.signed_fields`` of a request built with another version covers that version, in its place."""
    request = Request("r7", "example.com", ScimOperation("GET", "/Users"), 1_767_225_600, "k1", version=2)
    fields = request.signed_fields()
    assert list(fields) == ["v", "id", "domain", "op", "deadline", "reply_to", "key_id"]
    assert fields["v"] == 2
