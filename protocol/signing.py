"""Ed25519 request signing and the checks an agent makes before it touches a directory.

A ``Signer`` (the requester side) signs ``Request.signed_part()`` with a named private key.
A ``Verifier`` (the agent side) holds the public keys it trusts, by key id, and refuses a request
that is unsigned, signed by an unknown or revoked key, forged (signature does not verify), expired
(past its deadline, allowing ``clock_skew`` seconds) or replayed (an id it has already accepted
arrives again as a fresh message). Keys are loaded from PEM or raw base64 (32 bytes).

**Batch signatures.** An Ed25519 signature costs tens of microseconds to make and more to check:
at thousands of requests a second that is most of an agent's CPU. A ``SignatureBatcher`` signs
every request its caller sends within one event-loop turn with a single signature over the root of
a Merkle tree (RFC 6962 style: leaf ``SHA-256(0x00 || signed_part)``, node
``SHA-256(0x01 || left || right)``, signed message ``BATCH_CONTEXT || root``); each request carries
its ``proof``, the sibling hashes from its leaf to the root. The ``Verifier`` folds the proof, checks
the root's signature once and remembers verified roots, so the rest of the batch costs a few hashes
each. Forging a request into a signed batch means a SHA-256 second preimage; the context prefix keeps
a root signature from ever verifying as a single request's (those sign JSON, which starts with ``{``).

**libsodium signs and checks.** Keys are ``cryptography`` objects (PEM, config, bootstrap, the control
plane's certificates), but the signatures themselves are made and checked by libsodium (PyNaCl):
the same Ed25519 (RFC 8032, deterministic: byte for byte the signature OpenSSL makes) at half the
cost. On the project's test machine a signature takes 19 µs to make and 53 µs to check, against 31
and 103 µs through ``cryptography``'s OpenSSL; at C=64 over a 5 ms directory, where a batch holds
about 16 requests, that was a sixth of every request's instructions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from protocol.envelope import Request, canonical, encode_signed, refuse_non_finite
from protocol.errors import ProtocolError, ScimError
from protocol.replayguard import ReplayGuard


class SignatureError(ProtocolError):
    """A request failed verification; ``status`` is the SCIM status to answer with."""

    status: ClassVar[int] = 401  # ClassVar: compiled (mypyc), a plain class attribute would be an instance one

    def to_scim(self) -> ScimError:
        return ScimError(self.status, str(self))


class UnsignedRequestError(SignatureError):
    pass


class UnknownKeyError(SignatureError):
    pass


class ForgedRequestError(SignatureError):
    pass


class ExpiredRequestError(SignatureError):
    status: ClassVar[int] = 408


class ReplayedRequestError(SignatureError):
    status: ClassVar[int] = 409


class UnprovableFreshnessError(SignatureError):
    """The request may be a replay of one the replay memory let go (``protocol.replayguard``), or a new request
    it cannot tell from one. 503: the requester sends it again, as a new request."""

    status: ClassVar[int] = 503


def load_private_key(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS8) or base64 of its 32 raw bytes."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 private key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw32(text, "private"))


def load_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or base64 of its 32 raw bytes."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM key is not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw32(text, "public"))


def _raw32(text: str, kind: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {kind} key is neither PEM nor base64") from None
    if len(raw) != 32:
        raise ValueError(f"the {kind} key must be 32 bytes, got {len(raw)}")
    return raw


def public_key_text(key: Ed25519PublicKey) -> str:
    """The base64 form of a public key, as it appears in config and bootstrap replies."""
    return base64.b64encode(_public_raw(key)).decode()


def private_key_text(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(_private_raw(key)).decode()


def _private_raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def _public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check(public: bytes, signature: bytes, message: bytes) -> None:
    """Raise ``BadSignatureError`` unless ``signature`` is an Ed25519 signature of ``message`` by ``public``.

    libsodium takes signature and message as one buffer: a signature of any other length than 64 bytes
    would shift the message it checks, so it is refused first.
    """
    if len(signature) != 64:
        raise BadSignatureError(f"an Ed25519 signature is 64 bytes, not {len(signature)}")
    crypto_sign_open(signature + message, public)


class Signer:
    """Signs requests with one private key, announced by ``key_id``."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        self.key_id = key_id
        self._key = private_key
        self._secret = crypto_sign_seed_keypair(_private_raw(private_key))[1]  # libsodium's form: seed + public

    @classmethod
    def generate(cls, key_id: str = "k1") -> Signer:
        return cls(key_id, Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self._key

    def sign(self, request: Request) -> Request:
        unsigned = self._own(request)
        return unsigned.with_signature(self.key_id, _b64(self._sign(unsigned.signed_part())))

    def sign_batch(self, requests: list[Request]) -> list[Request]:
        """``requests`` under one signature over their Merkle root, each with its proof (one alone: plain)."""
        if len(requests) == 1:
            return [self.sign(requests[0])]
        unsigned = [self._own(request) for request in requests]
        root, proofs = merkle_tree([_leaf(request.signed_part()) for request in unsigned])
        signature = _b64(self._sign(BATCH_CONTEXT + root))
        return [
            request.with_signature(self.key_id, signature, proof)
            for request, proof in zip(unsigned, proofs, strict=True)
        ]

    def encode_batch(self, requests: list[Request]) -> list[bytes]:
        """The envelopes of ``sign_batch(requests)`` as ``encode`` makes them, byte for byte: what is sent.

        Each request's fields are laid out once, encoded canonically for its leaf (or plain signature),
        then completed with signature and proof for the wire; ``sign_batch`` and ``encode`` would build a
        second request per request and lay its fields out twice more. A body ``encode`` refuses (NaN,
        infinity) is a ``ValueError`` before anything is signed.
        """
        return self.encode_fields([request.signed_fields() for request in requests])

    def encode_fields(self, batch: list[dict[str, Any]]) -> list[bytes]:
        """``encode_batch`` for requests given by their signed fields (``signed_fields``, ``request_fields``),
        which it completes in place: a requester that never reads its requests back makes no Request."""
        key_id = self.key_id
        for fields in batch:
            refuse_non_finite(fields["op"]["body"])
            if fields["key_id"] != key_id:  # the key id is part of what is signed
                fields["key_id"] = key_id
        if len(batch) == 1:
            return [encode_signed(batch[0], _b64(self._sign(canonical(batch[0]))), None)]
        root, proofs = merkle_tree([_leaf(canonical(fields)) for fields in batch])
        signature = _b64(self._sign(BATCH_CONTEXT + root))
        return [encode_signed(fields, signature, proof) for fields, proof in zip(batch, proofs, strict=True)]

    def _sign(self, message: bytes) -> bytes:
        return crypto_sign(message, self._secret)[:64]  # libsodium returns signature + message

    def _own(self, request: Request) -> Request:
        """``request`` naming this signer's key: the key id is part of what is signed (a request built for
        this signer already names it, and is not copied)."""
        return request if request.key_id == self.key_id else request.with_signature(self.key_id, "")


BATCH_CONTEXT = b"cloudprov batch signature v1\x00"
#: A batch that waits for more requests is complete once it holds more than this share of the requests
#: its callers expect: a closed loop then moves in several overlapping cohorts, not in one lockstep round
#: whose CPU work and round trip never overlap. A sixteenth: over a 5 ms directory (bench.agent_load,
#: compiled, an idle machine, alternated with an eighth, twice) 0.74-0.75 of C/L instead of 0.72 at 64 in
#: flight, 0.82-0.83 instead of 0.80-0.81 at 32, 0.87 instead of 0.85 at 16, the same at 8 and for the
#: GET/PATCH mix, for about a tenth more CPU per request at 64 (more, smaller batches); over RabbitMQ
#: (bench.transport_rpc, 100 in flight) and SCIM over slapd at 16 the same within the noise. An eighth,
#: in its day, had beaten a quarter at every concurrency.
COMPLETE_SHARE = 0.0625
#: Proof steps a ``Verifier`` remembers (by exact input, so only work is saved): a batch of n requests
#: has 2(n - 1) of them; about 2.5 MB at most.
MAX_FOLDS = 8192


def _leaf(signed_part: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + signed_part).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_tree(leaves: list[bytes]) -> tuple[bytes, list[tuple[str, ...]]]:
    """The root over ``leaves`` and, per leaf, its proof: ``l:``/``r:`` + base64 of each sibling, leaf up.

    A level with an odd count carries its last node up unchanged (no step in that node's proofs).
    """
    proofs: list[list[str]] = [[] for _ in leaves]
    level: list[tuple[bytes, list[int]]] = [(leaf, [index]) for index, leaf in enumerate(leaves)]
    while len(level) > 1:
        above: list[tuple[bytes, list[int]]] = []
        for at in range(0, len(level) - 1, 2):
            (left, left_leaves), (right, right_leaves) = level[at], level[at + 1]
            step = "r:" + _b64(right)  # one string for every leaf under this node, encoded once
            for index in left_leaves:
                proofs[index].append(step)
            step = "l:" + _b64(left)
            for index in right_leaves:
                proofs[index].append(step)
            left_leaves.extend(right_leaves)
            above.append((_node(left, right), left_leaves))
        if len(level) % 2:
            above.append(level[-1])
        level = above
    return level[0][0], [tuple(proof) for proof in proofs]


def _b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).decode()


def merkle_root(leaf: bytes, proof: tuple[str, ...], memo: dict[bytes, tuple[str, bytes]] | None = None) -> bytes:
    """The root ``proof`` climbs to from ``leaf``; ``ValueError`` when a step is malformed.

    ``memo`` remembers each step's result by its exact input: by node, the step taken from it and the
    node above (a lookup by node and a string comparison, no key tuple to build and hash per step). The
    requests of one batch share the upper part of their paths. A fold also remembers the step the other
    child takes to the same node (its sibling, as ``merkle_tree`` writes it: this node in base64), since
    that child's request will ask for it: a batch of n then hashes n - 1 times (each inner node once)
    instead of n x log2(n), for a base64 encoding per hash (a fraction of a SHA-256 call). Each entry is
    a fact, whoever proves it: only a step of exactly that text from exactly that node is skipped; any
    other step is folded anew (and remembered instead).
    """
    node = leaf
    for step in proof:
        if memo is not None:
            known = memo.get(node)
            if known is not None and known[0] == step:
                node = known[1]
                continue
        side, colon, text = step.partition(":")
        sibling = binascii.a2b_base64(text, strict_mode=True)  # binascii.Error is a ValueError
        if not colon or len(sibling) != 32:
            raise ValueError(f"malformed proof step {step[:60]!r}")
        if side == "l":
            above = hashlib.sha256(b"\x01" + sibling + node).digest()
            if memo is not None:
                memo[sibling] = ("r:" + _b64(node), above)
        elif side == "r":
            above = hashlib.sha256(b"\x01" + node + sibling).digest()
            if memo is not None:
                memo[sibling] = ("l:" + _b64(node), above)
        else:
            raise ValueError(f"malformed proof step {step[:60]!r}")
        if memo is not None:
            memo[node] = (step, above)
        node = above
    return node


class SignatureBatcher:
    """Collects requests for a moment and signs them as one batch (one Ed25519 signature per batch).

    ``await batcher.sign_and_encode(signer, fields, expected=n)`` returns the envelope bytes of the
    request whose signed fields are ``fields`` (``Signer.encode_fields``: what a requester sends) once
    its batch is signed. ``expected`` is how many more requests the caller may send soon (its other
    requests in flight, whose replies make it send again). A batch is signed at the end of the
    event-loop turn in which it became complete: when nothing more is expected (one caller, one
    request at a time: no wait), when more than ``COMPLETE_SHARE`` of the expected requests have
    joined, or when ``max_batch`` requests wait; otherwise at the latest ``linger`` seconds after its
    first request. Requests sent together (a sync cycle fanning out) therefore share a signature at
    once, and callers whose replies trickle in one by one (a closed loop over a latent directory)
    share one too instead of paying a signature each: signing and checking one costs more than a
    millisecond of waiting saves. A request alone gets a plain signature.
    """

    def __init__(self, *, max_batch: int = 256, linger: float = 0.0) -> None:
        self.max_batch = max_batch
        self.linger = linger
        self._pending: list[tuple[Signer, dict[str, Any], asyncio.Future[Any], Callable[[bytes], object]]] = []
        self._flush_at: asyncio.Handle | None = None  # a TimerHandle while the batch lingers

    async def sign_and_encode(self, signer: Signer, fields: dict[str, Any], *, expected: int = 0) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.sign_then(signer, fields, future.set_result, future, expected=expected)
        return await future

    def sign_then(
        self,
        signer: Signer,
        fields: dict[str, Any],
        send: Callable[[bytes], object],
        waiter: asyncio.Future[Any],
        *,
        expected: int = 0,
    ) -> None:
        """``sign_and_encode`` without a wait of its own: once the batch is signed, ``send(envelope)`` is
        called (in the callback that signs the batch), unless ``waiter`` is done by then (its caller stopped
        waiting); an error signing the batch or from ``send`` is set on ``waiter``. A requester that sends
        from a callback (``transports.base.PostingRequester``) joins a batch this way and then awaits only
        its reply: its caller's task wakes once per request instead of twice."""
        # A body the envelope refuses fails this caller here, not the batch it would have joined.
        refuse_non_finite(fields["op"]["body"])
        pending = self._pending
        pending.append((signer, fields, waiter, send))
        if len(pending) >= self.max_batch:
            self._flush()
        elif self.linger <= 0 or len(pending) > expected * COMPLETE_SHARE:
            lingering = self._flush_at
            if lingering is None or isinstance(lingering, asyncio.TimerHandle):  # not yet due this turn
                if lingering is not None:
                    lingering.cancel()
                self._flush_at = asyncio.get_running_loop().call_soon(self._flush)
        elif self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(self.linger, self._flush)

    def _flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        pending, self._pending = self._pending, []
        by_signer: dict[int, list[tuple[Signer, dict[str, Any], asyncio.Future[Any], Callable[[bytes], object]]]] = {}
        for entry in pending:
            if not entry[2].done():  # a caller cancelled (or timed out) while waiting
                by_signer.setdefault(id(entry[0]), []).append(entry)
        for entries in by_signer.values():
            try:
                signed = entries[0][0].encode_fields([fields for _, fields, _, _ in entries])
            except Exception as error:  # each caller gets the error, raised in its own task
                for _, _, waiter, _ in entries:
                    waiter.set_exception(error)
                continue
            for (_, _, waiter, send), envelope in zip(entries, signed, strict=True):
                try:
                    send(envelope)
                except Exception as error:  # this caller's alone (a message too large, a closed requester)
                    if not waiter.done():
                        waiter.set_exception(error)


class Verifier:
    """Checks signature, key, deadline and freshness of requests; the keys can be replaced live."""

    def __init__(
        self,
        keys: Mapping[str, Ed25519PublicKey],
        *,
        clock_skew: float = 30.0,
        max_lifetime: float = 900.0,
        replay_memory: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = {key_id: _public_raw(key) for key_id, key in keys.items()}
        self.clock_skew = clock_skew
        self.max_lifetime = max_lifetime
        self._clock = clock
        self.replays = ReplayGuard(replay_memory)
        self._roots: OrderedDict[tuple[str, bytes, str], None] = OrderedDict()
        self.max_roots = 4096
        self._folds: dict[bytes, tuple[str, bytes]] = {}  # proof steps folded lately (``merkle_root``'s memo)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def set_keys(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Replace the trusted keys (bootstrap delivers them); a key left out is revoked at once."""
        self._keys = {key_id: _public_raw(key) for key_id, key in keys.items()}
        self._roots.clear()

    def verify(self, request: Request, *, redelivered: bool = False) -> None:
        """Raise a ``SignatureError`` unless ``request`` may touch the directory.

        ``redelivered`` is the transport's word that this is the same message again (not a copy
        injected by someone else); a redelivered id is not a replay, the caller answers it from its
        idempotency store.
        """
        if not request.signature or not request.key_id:
            raise UnsignedRequestError(f"request {request.id} is not signed; every request must carry a signature")
        key = self._keys.get(request.key_id)
        if key is None:
            raise UnknownKeyError(
                f"request {request.id} is signed with key {request.key_id!r}, which this agent does not trust"
            )
        try:
            if request.proof is None:
                _check(key, base64.b64decode(request.signature, validate=True), request.signed_part())
            else:
                folds = self._folds
                if len(folds) > MAX_FOLDS:  # a batch's steps are needed while it arrives, not after
                    folds.clear()
                root = merkle_root(_leaf(request.signed_part()), request.proof, folds)
                self._verify_batched(key, request.key_id, request.signature, root)
        except (BadSignatureError, binascii.Error, ValueError):
            raise ForgedRequestError(
                f"request {request.id}: signature does not verify with key {request.key_id!r}"
            ) from None
        now = self._clock()
        if request.deadline + self.clock_skew < now:
            raise ExpiredRequestError(
                f"request {request.id} expired {now - request.deadline:.1f}s ago (deadline passed)"
            )
        if request.deadline - now > self.max_lifetime + self.clock_skew:
            raise ExpiredRequestError(
                f"request {request.id} has a deadline {request.deadline - now:.0f}s away, beyond the "
                f"{self.max_lifetime:.0f}s this agent accepts"
            )
        replays = self.replays
        if not redelivered and replays.seen(request.id):
            raise ReplayedRequestError(f"request {request.id} was already accepted; a fresh copy of it is a replay")
        if not redelivered and replays.unprovable(request.id, request.deadline):
            raise UnprovableFreshnessError(
                f"request {request.id} may be a replay: more requests were live than this agent remembers exactly, "
                f"and it cannot tell this one from those it let go; send it again as a new request"
            )
        replays.remember(request.id, request.deadline, now - self.clock_skew)

    def _verify_batched(self, key: bytes, key_id: str, signature: str, root: bytes) -> None:
        """Check a batch root's signature once; later requests of the same batch hit the cache.

        Remembered by the signature's text as sent (the bytes it decodes to verified; the same text decodes
        to the same bytes), so the rest of the batch does not decode it again.
        """
        remembered = (key_id, root, signature)
        if remembered in self._roots:
            self._roots.move_to_end(remembered)
            return
        _check(key, base64.b64decode(signature, validate=True), BATCH_CONTEXT + root)
        self._roots[remembered] = None
        if len(self._roots) > self.max_roots:
            self._roots.popitem(last=False)
