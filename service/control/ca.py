"""The control plane's own certificate authority (``cryptography``, ECDSA P-256).

What it is
    ``CertificateAuthority`` signs the agents' client certificates (from their CSRs) and the server
    certificate of the control plane's HTTPS listener. ``load_or_create(state_dir)`` creates the CA
    on first start (``ca.pem`` + ``ca.key``, the key written 0600) and loads it afterwards; an
    operator's own CA is used instead when ``cert_file``/``key_file`` are given.

Settings
    ``client_lifetime`` (seconds a client certificate is valid), the listener's host names and IP
    addresses (``server_certificate(hosts)``).

Guarantees
    A client certificate names exactly one agent: subject CN = agent id and a URI SAN
    ``urn:cloudprov:agent:<id>``, extended key usage client-auth only, a fresh random serial (the
    store keeps the current serial per agent; any other serial is refused at the door). A CSR
    whose signature does not verify, whose key is not EC/Ed25519/RSA ≥ 2048, or that names another
    agent is refused with ``CsrError``. Private keys never leave the state folder except as 0600 files.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.configfile import write_private

AGENT_URI_PREFIX = "urn:cloudprov:agent:"
#: A valid agent id, matched with ``fullmatch`` (``$`` would also match before a final newline).
AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CA_LIFETIME = datetime.timedelta(days=3650)
SERVER_LIFETIME = datetime.timedelta(days=397)


class CsrError(ValueError):
    """A certificate signing request cannot be signed (the message says why)."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A signed client certificate, its serial (hex) and expiry (epoch seconds)."""

    pem: str
    serial: str
    not_after: float


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    encoding, fmt = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, fmt, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def fingerprint(cert: x509.Certificate) -> str:
    """``sha256:<hex>`` of the certificate's DER: what an agent pins before it trusts the CA."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def agent_id_of(cert: x509.Certificate) -> str | None:
    """The agent a client certificate names (URI SAN, else CN), or None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(AGENT_URI_PREFIX):
                return uri.removeprefix(AGENT_URI_PREFIX)
    except x509.ExtensionNotFound:
        pass
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def make_csr(agent_id: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A new P-256 key and a CSR naming ``agent_id`` (the agent's side of registration and renewal)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(AGENT_URI_PREFIX + agent_id)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateAuthority:
    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self._key = key

    @property
    def cert_pem(self) -> str:
        return cert_pem(self.cert)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    @classmethod
    def load_or_create(
        cls, state_dir: Path, *, cert_file: Path | None = None, key_file: Path | None = None, name: str = "cloudprov"
    ) -> CertificateAuthority:
        """The operator's CA (both files given), else ``state_dir/ca.pem``+``ca.key``, created when absent."""
        if (cert_file is None) != (key_file is None):
            raise ValueError("give both the CA certificate file and its key file, or neither")
        cert_path = cert_file or state_dir / "ca.pem"
        key_path = key_file or state_dir / "ca.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: the CA key must be an EC private key")
            if cert.public_key() != key.public_key():
                raise ValueError(f"{cert_path} and {key_path} do not belong together")
            return cls(cert, key)
        if cert_file is not None:
            raise ValueError(f"CA files {cert_path} / {key_path} do not exist")
        ca = cls.create(name)
        write_private(key_path, key_pem(ca._key))
        cert_path.write_text(ca.cert_pem)
        return ca

    @classmethod
    def create(cls, name: str = "cloudprov") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} control plane CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def _builder(
        self, subject: x509.Name, public_key: CertificatePublicKeyTypes, lifetime: datetime.timedelta
    ) -> x509.CertificateBuilder:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )

    def issue_client(self, csr_pem: str, agent_id: str, lifetime: float) -> IssuedCertificate:
        """Sign a client certificate for ``agent_id`` from its CSR (which must name that agent)."""
        if not AGENT_ID.fullmatch(agent_id):
            raise CsrError(f"{agent_id!r} is not a valid agent id (letters, digits, '.', '_', '-'; 128 at most)")
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError:
            raise CsrError("the CSR is not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise CsrError("the CSR's signature does not verify")
        key = csr.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
            raise CsrError("an RSA key in a CSR must have 2048 bits at least")
        if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
            raise CsrError(f"keys of type {type(key).__name__} are not accepted")
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or names[0].value != agent_id:
            raise CsrError(f"the CSR must name the agent {agent_id!r} in its common name")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)])
        cert = (
            self._builder(subject, key, datetime.timedelta(seconds=lifetime))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(AGENT_URI_PREFIX + agent_id)]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCertificate(cert_pem(cert), serial_hex(cert), cert.not_valid_after_utc.timestamp())

    def server_certificate(self, hosts: list[str]) -> tuple[str, bytes]:
        """A server certificate (PEM) and its key (PEM) for the listener, valid for ``hosts``."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")])
        cert = (
            self._builder(subject, key.public_key(), SERVER_LIFETIME)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert_pem(cert), key_pem(key)

    def write_server_files(self, state_dir: Path, hosts: list[str]) -> tuple[Path, Path]:
        """Issue a fresh server certificate for ``hosts`` into ``state_dir`` (key 0600); return the paths."""
        cert_text, key_bytes = self.server_certificate(hosts)
        cert_path, key_path = state_dir / "server.pem", state_dir / "server.key"
        write_private(key_path, key_bytes)
        cert_path.write_text(cert_text + self.cert_pem)
        return cert_path, key_path

    def verifies(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` was signed by this CA (the TLS layer checks this too; used for defence in depth)."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
