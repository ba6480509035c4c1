"""The control plane's certificate authority: creation, loading, and what it will and will not sign."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from service.control.ca import CertificateAuthority, CsrError, agent_id_of, make_csr, serial_hex


def test_created_on_first_start_with_a_private_key_file(tmp_path: Path) -> None:
    """The first start writes ca.pem and a 0600 ca.key; the next start loads the same CA."""
    ca = CertificateAuthority.load_or_create(tmp_path / "state")
    assert stat.S_IMODE((tmp_path / "state" / "ca.key").stat().st_mode) == 0o600
    again = CertificateAuthority.load_or_create(tmp_path / "state")
    assert again.fingerprint == ca.fingerprint


def test_operator_files_are_loaded_and_must_exist(tmp_path: Path) -> None:
    """Given CA files are used as they are; missing ones are an error, not a silent new CA."""
    ca = CertificateAuthority.load_or_create(tmp_path)
    loaded = CertificateAuthority.load_or_create(
        tmp_path / "other", cert_file=tmp_path / "ca.pem", key_file=tmp_path / "ca.key"
    )
    assert loaded.fingerprint == ca.fingerprint
    with pytest.raises(ValueError, match="do not exist"):
        CertificateAuthority.load_or_create(tmp_path, cert_file=tmp_path / "x.pem", key_file=tmp_path / "x.key")


def test_client_certificate_names_the_agent() -> None:
    """A client certificate carries the agent id as CN and URI SAN, client-auth only, signed by the CA."""
    ca = CertificateAuthority.create()
    _key, csr = make_csr("agent-7")
    issued = ca.issue_client(csr, "agent-7", lifetime=3600)
    cert = x509.load_pem_x509_certificate(issued.pem.encode())
    assert agent_id_of(cert) == "agent-7"
    assert serial_hex(cert) == issued.serial
    assert ca.verifies(cert)
    assert not CertificateAuthority.create().verifies(cert)


@pytest.mark.parametrize(
    ("csr_agent", "claimed", "message"),
    [
        ("agent-1", "agent-2", "must name the agent"),
        ("agent-1", "bad id/..", "not a valid agent id"),
        ("agent-1\n", "agent-1\n", "not a valid agent id"),  # ``$`` alone would match before the newline
        ("agent-1", "agent-1\n", "not a valid agent id"),
    ],
)
def test_csr_for_another_agent_is_refused(csr_agent: str, claimed: str, message: str) -> None:
    """The CA signs a CSR only for the agent it names, and only valid agent ids."""
    _key, csr = make_csr(csr_agent)
    with pytest.raises(CsrError, match=message):
        CertificateAuthority.create().issue_client(csr, claimed, lifetime=60)


def test_garbage_csr_is_refused() -> None:
    """Text that is not a CSR is refused with a clear error."""
    with pytest.raises(CsrError, match="not a PEM"):
        CertificateAuthority.create().issue_client("hello", "agent-1", lifetime=60)
