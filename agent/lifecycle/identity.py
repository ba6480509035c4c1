"""The agent's identity on disk: its key, its certificate and the control plane's CA, all 0600.

Files (in the control-plane state folder): ``agent.key`` (P-256, PKCS8 PEM), ``agent.pem`` (the
client certificate), ``ca.pem`` (the control plane's CA), ``bootstrap.json`` (the last successful
bootstrap, so a restart serves on the last known endpoints before the control plane answers).
Writes are atomic (temporary file, then rename) and created with mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protocol.configfile import write_private

AGENT_URI_PREFIX = "urn:cloudprov:agent:"


class IdentityError(Exception):
    """The agent has no usable identity (not registered, or files missing or mismatched)."""


def new_key_and_csr(agent_id: str) -> tuple[bytes, str]:
    """A new P-256 key (PEM) and a CSR naming ``agent_id`` as CN and URI SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(AGENT_URI_PREFIX + agent_id)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def ca_fingerprint(pem: str) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Where the agent's identity files live in ``state_dir``."""

    state_dir: Path
    ca_override: Path | None = None

    @property
    def key_file(self) -> Path:
        return self.state_dir / "agent.key"

    @property
    def cert_file(self) -> Path:
        return self.state_dir / "agent.pem"

    @property
    def ca_file(self) -> Path:
        return self.ca_override or self.state_dir / "ca.pem"

    @property
    def cache_file(self) -> Path:
        return self.state_dir / "bootstrap.json"

    def save(self, key_pem: bytes, cert_pem: str, ca_pem: str | None = None) -> None:
        write_private(self.key_file, key_pem)
        write_private(self.cert_file, cert_pem.encode())
        if ca_pem is not None and self.ca_override is None:
            write_private(self.ca_file, ca_pem.encode())

    def certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        except FileNotFoundError:
            raise IdentityError(
                f"no agent certificate in {self.state_dir}: "
                "run 'cloudprov agent register --control-plane URL --token T' first"
            ) from None

    def agent_id(self) -> str:
        names = self.certificate().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise IdentityError(f"{self.cert_file} names no agent")
        return str(names[0].value)

    def not_after(self) -> float:
        return self.certificate().not_valid_after_utc.timestamp()

    def client_context(self) -> ssl.SSLContext:
        """Verify the control plane against its CA and present the agent's certificate.

        An expired certificate (by the wall clock, as TLS checks it) is an ``IdentityError`` that says so:
        presented, the control plane's TLS would only end the handshake, which reads as a connection reset."""
        if not self.ca_file.exists():
            raise IdentityError(f"the control plane's CA file {self.ca_file} is missing")
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (FileNotFoundError, ssl.SSLError) as exc:
            raise IdentityError(f"cannot load the agent's key and certificate from {self.state_dir}: {exc}") from None
        expiry = self.certificate().not_valid_after_utc
        if expiry.timestamp() <= time.time():
            raise IdentityError(
                f"the agent's certificate {self.cert_file} expired at {expiry.isoformat()}, so the control plane "
                "refuses it: register the agent again with a token for its domain ('cloudprov agent register "
                f"--control-plane URL --token T --ca-file {self.ca_file}')"
            )
        return context

    def save_bootstrap(self, document: dict[str, Any]) -> None:
        write_private(self.cache_file, json.dumps(document, sort_keys=True).encode())

    def last_bootstrap(self) -> dict[str, Any] | None:
        try:
            document = json.loads(self.cache_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return document if isinstance(document, dict) else None
