"""Ed25519 request signing and the checks an agent makes before it touches a directory.

A ``Signer`` (the requester side) signs ``Request.signed_part()`` with a named private key.
A ``Verifier`` (the agent side) holds the public keys it trusts, by key id, and refuses a request
that is unsigned, signed by an unknown or revoked key, forged (signature does not verify), expired
(past its deadline, allowing ``clock_skew`` seconds) or replayed (an id it has already accepted
arrives again as a fresh message). Keys are loaded from PEM or raw base64 (32 bytes).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.envelope import Request
from protocol.errors import ProtocolError, ScimError


class SignatureError(ProtocolError):
    """A request failed verification; ``status`` is the SCIM status to answer with."""

    status = 401

    def to_scim(self) -> ScimError:
        return ScimError(self.status, str(self))


class UnsignedRequestError(SignatureError):
    pass


class UnknownKeyError(SignatureError):
    pass


class ForgedRequestError(SignatureError):
    pass


class ExpiredRequestError(SignatureError):
    status = 408


class ReplayedRequestError(SignatureError):
    status = 409


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
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def private_key_text(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return base64.b64encode(raw).decode()


class Signer:
    """Signs requests with one private key, announced by ``key_id``."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        self.key_id = key_id
        self._key = private_key

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
        unsigned = request.with_signature(self.key_id, "")
        signature = self._key.sign(unsigned.signed_part())
        return unsigned.with_signature(self.key_id, base64.b64encode(signature).decode())


class ReplayGuard:
    """Remembers accepted request ids until their deadline passes (bounded: oldest forgotten first)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries

    def seen(self, request_id: str) -> bool:
        return request_id in self._seen

    def remember(self, request_id: str, until: float, now: float) -> None:
        self._seen[request_id] = until
        self._seen.move_to_end(request_id)
        while self._seen:
            oldest_id, oldest_until = next(iter(self._seen.items()))
            if oldest_until >= now and len(self._seen) <= self._max:
                break
            del self._seen[oldest_id]


class Verifier:
    """Checks signature, key, deadline and freshness of requests; the keys can be replaced live."""

    def __init__(
        self,
        keys: Mapping[str, Ed25519PublicKey],
        *,
        clock_skew: float = 30.0,
        max_lifetime: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = dict(keys)
        self.clock_skew = clock_skew
        self.max_lifetime = max_lifetime
        self._clock = clock
        self.replays = ReplayGuard()

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def set_keys(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Replace the trusted keys (bootstrap delivers them); a key left out is revoked at once."""
        self._keys = dict(keys)

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
            signature = base64.b64decode(request.signature, validate=True)
            key.verify(signature, request.with_signature(request.key_id, "").signed_part())
        except (InvalidSignature, binascii.Error, ValueError):
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
        if self.replays.seen(request.id) and not redelivered:
            raise ReplayedRequestError(f"request {request.id} was already accepted; a fresh copy of it is a replay")
        self.replays.remember(request.id, request.deadline + self.clock_skew, now)
