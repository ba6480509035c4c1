"""Signed messages of wire format version 1, as this code base made them: they must keep verifying, and
signing the same requests with the same key must keep making exactly these bytes (Ed25519 is deterministic)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.envelope import Request, ScimOperation, decode_request
from protocol.signing import ForgedRequestError, Signer, Verifier

# signed with the key whose private bytes are 0, 1, …, 31 (key id "k1"); deadlines in 2026
BATCH_OF_FIVE = [
    (
        b'{"v":1,"id":"req-0","domain":"example.com","op":{"method":"GET","path":"/Users","query":{"'
        b'filter":"userName eq \\"user0\\""},"body":null},"deadline":1767225600.5,"reply_to":null,"key'
        b'_id":"k1","sig":"1BXoTHiZ5gL+jdd7nT9sgYrdJUXbjbsOh72/oxdHA1wghAfGkPYCq4t4l5iF5LNQjqz9GcWh5'
        b'v+lT6ucCvFXBA==","proof":["r:F9ZxuN8ZTDwMzdLG4TWLxKd4xolfHeIu6XlduWnz/Ak=","r:LrDqpCOwF924'
        b'tEY9128yUdqvktpxok9xZM34Y4za1b0=","r:+dK9lZp09cnxJGyzqPMroMUEBeDRTQe4u4i9FCwCG9Q="]}'
    ),
    (
        b'{"v":1,"id":"req-1","domain":"example.com","op":{"method":"GET","path":"/Users","query":{"'
        b'filter":"userName eq \\"user1\\""},"body":null},"deadline":1767225601.5,"reply_to":null,"key'
        b'_id":"k1","sig":"1BXoTHiZ5gL+jdd7nT9sgYrdJUXbjbsOh72/oxdHA1wghAfGkPYCq4t4l5iF5LNQjqz9GcWh5'
        b'v+lT6ucCvFXBA==","proof":["l:P02SkvFKQWpJiNg/rhjwsXR7Qn4hhcz7OcxGhb7flyY=","r:LrDqpCOwF924'
        b'tEY9128yUdqvktpxok9xZM34Y4za1b0=","r:+dK9lZp09cnxJGyzqPMroMUEBeDRTQe4u4i9FCwCG9Q="]}'
    ),
    (
        b'{"v":1,"id":"req-2","domain":"example.com","op":{"method":"GET","path":"/Users","query":{"'
        b'filter":"userName eq \\"user2\\""},"body":null},"deadline":1767225602.5,"reply_to":null,"key'
        b'_id":"k1","sig":"1BXoTHiZ5gL+jdd7nT9sgYrdJUXbjbsOh72/oxdHA1wghAfGkPYCq4t4l5iF5LNQjqz9GcWh5'
        b'v+lT6ucCvFXBA==","proof":["r:7q/XQhxsaqD8dlR8hoMphMq8Kj1b8nnlJ423GopeJT4=","l:pp0msmzCO52m'
        b'+RKCNbXdTh4BEPVrTkll54xl7HQ8G38=","r:+dK9lZp09cnxJGyzqPMroMUEBeDRTQe4u4i9FCwCG9Q="]}'
    ),
    (
        b'{"v":1,"id":"req-3","domain":"example.com","op":{"method":"GET","path":"/Users","query":{"'
        b'filter":"userName eq \\"user3\\""},"body":null},"deadline":1767225603.5,"reply_to":null,"key'
        b'_id":"k1","sig":"1BXoTHiZ5gL+jdd7nT9sgYrdJUXbjbsOh72/oxdHA1wghAfGkPYCq4t4l5iF5LNQjqz9GcWh5'
        b'v+lT6ucCvFXBA==","proof":["l:Vn/MMRwXyGrtQqRcTE8yGJeYNrT38qC8/8L8G2/BXjE=","l:pp0msmzCO52m'
        b'+RKCNbXdTh4BEPVrTkll54xl7HQ8G38=","r:+dK9lZp09cnxJGyzqPMroMUEBeDRTQe4u4i9FCwCG9Q="]}'
    ),
    (
        b'{"v":1,"id":"req-4","domain":"example.com","op":{"method":"GET","path":"/Users","query":{"'
        b'filter":"userName eq \\"user4\\""},"body":null},"deadline":1767225604.5,"reply_to":null,"key'
        b'_id":"k1","sig":"1BXoTHiZ5gL+jdd7nT9sgYrdJUXbjbsOh72/oxdHA1wghAfGkPYCq4t4l5iF5LNQjqz9GcWh5'
        b'v+lT6ucCvFXBA==","proof":["l:py/KvucCEa0dXh7RoeUPUxVoeABxlvVWCbZ/cqPlbd0="]}'
    ),
]
SINGLE = (
    b'{"v":1,"id":"req-9","domain":"example.com","op":{"method":"GET","path":"/Users","query":{"'
    b'filter":"userName eq \\"user9\\""},"body":null},"deadline":1767225609.5,"reply_to":null,"key'
    b'_id":"k1","sig":"bpS4fmhYUukT4BZZmilQ+CSPbHCDiTyHUb5snlERYv8oXwovSLNn/ix25EGCp+uIOSiU5Plld'
    b'gS653xo2hibBQ=="}'
)


def _signer() -> Signer:
    return Signer("k1", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def _request(number: int) -> Request:
    query = {"filter": f'userName eq "user{number}"'}
    operation = ScimOperation("GET", "/Users", query, None)
    return Request(id=f"req-{number}", domain="example.com", operation=operation,
                   deadline=1_767_225_600.5 + number, key_id="k1")  # fmt: skip


def test_stored_messages_verify() -> None:
    """Batch-signed and plainly signed messages made before keep verifying."""
    verifier = Verifier({"k1": _signer().public_key}, clock=lambda: 1_767_225_000.0)
    for raw in [*BATCH_OF_FIVE, SINGLE]:
        verifier.verify(decode_request(raw))


def test_signing_makes_the_same_bytes() -> None:
    """The same requests and key give byte-for-byte the messages made before: tree, proofs, signature, JSON."""
    signer = _signer()
    assert [request.encode() for request in signer.sign_batch([_request(n) for n in range(5)])] == BATCH_OF_FIVE
    assert signer.sign(_request(9)).encode() == SINGLE


def test_a_stored_message_changed_in_one_field_is_forged() -> None:
    """The stored vectors are checked for real: one changed character makes them fail."""
    verifier = Verifier({"k1": _signer().public_key}, clock=lambda: 1_767_225_000.0)
    tampered = BATCH_OF_FIVE[2].replace(b"user2", b"user7")
    with pytest.raises(ForgedRequestError):
        verifier.verify(decode_request(tampered))
