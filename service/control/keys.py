"""Request-signing keys of the control plane: made, sealed at rest, and turned back into a ``Signer``.

Settings
    ``store.key_secret``: when set, private keys are stored sealed with AES-256-GCM under a key
    derived from it (HKDF-SHA256), the key id bound as associated data; without it they are stored
    in the clear (prefix ``plain:``) and the service logs a warning at start.

Guarantees
    A sealed key opens only with the same secret and under its own id; anything else raises
    ``KeySealError`` rather than returning a wrong key.
"""

from __future__ import annotations

import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.signing import Signer, load_private_key, private_key_text, public_key_text
from service.store import SigningKeyRecord


class KeySealError(ValueError):
    """A stored private key cannot be opened (wrong secret, tampered, or sealed but no secret set)."""


def _aead(secret: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cloudprov signing keys v1")
    return AESGCM(hkdf.derive(secret.encode()))


def seal(private_text: str, key_id: str, secret: str | None) -> str:
    if secret is None:
        return "plain:" + private_text
    nonce = os.urandom(12)
    sealed = _aead(secret).encrypt(nonce, private_text.encode(), key_id.encode())
    return "aesgcm:" + base64.b64encode(nonce + sealed).decode()


def unseal(stored: str, key_id: str, secret: str | None) -> str:
    kind, _, body = stored.partition(":")
    if kind == "plain":
        return body
    if kind != "aesgcm":
        raise KeySealError(f"signing key {key_id}: unknown storage format {kind!r}")
    if secret is None:
        raise KeySealError(f"signing key {key_id} is sealed; set store.key_secret to open it")
    raw = base64.b64decode(body)
    try:
        return _aead(secret).decrypt(raw[:12], raw[12:], key_id.encode()).decode()
    except InvalidTag:
        raise KeySealError(f"signing key {key_id} does not open with this store.key_secret") from None


def new_signing_key(now: float, secret: str | None) -> SigningKeyRecord:
    """A fresh active Ed25519 key with an id that sorts by creation time."""
    key_id = f"k{int(now)}-{secrets.token_hex(3)}"
    signer = Signer.generate(key_id)
    sealed = seal(private_key_text(signer.private_key), key_id, secret)
    return SigningKeyRecord(key_id, public_key_text(signer.public_key), sealed, "active", now)


def signer_of(record: SigningKeyRecord, secret: str | None) -> Signer:
    return Signer(record.id, load_private_key(unseal(record.private_key, record.id, secret)))
