"""Registration: a key pair and CSR made here, a one-time token, a certificate back; saved 0600.

The control plane is trusted before the token is sent: either its CA file is given, or its
``sha256:`` fingerprint (``cloudprov admin token create`` prints it) pins the CA fetched from
``/v1/ca``. Nothing is written unless the control plane issued a certificate.
"""

from __future__ import annotations

import hmac
import ssl
from pathlib import Path
from typing import Any

from agent.lifecycle.client import ControlPlaneRefusedError, call
from agent.lifecycle.identity import Identity, ca_fingerprint, new_key_and_csr


async def fetch_pinned_ca(url: str, pin: str, timeout: float) -> str:
    """The control plane's CA from ``/v1/ca``, accepted only if its fingerprint is ``pin``."""
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # only to read the CA, which the pin then checks
    ca_pem = str(await call(url, "GET", "/v1/ca", None, context=unverified, timeout=timeout))
    if not hmac.compare_digest(ca_fingerprint(ca_pem), pin.lower()):
        raise ControlPlaneRefusedError(0, "ca_mismatch", f"the CA at {url} does not have the pinned fingerprint {pin}")
    return ca_pem


async def register(
    url: str,
    token: str,
    agent_id: str,
    state_dir: Path,
    *,
    ca_pem: str | None = None,
    ca_fingerprint_pin: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Register ``agent_id`` with the control plane at ``url``; returns its answer (domain, not_after)."""
    if ca_pem is None:
        if ca_fingerprint_pin is None:
            raise ValueError(
                "give the control plane's CA certificate or its fingerprint, so the token goes to the right place"
            )
        ca_pem = await fetch_pinned_ca(url, ca_fingerprint_pin, timeout)
    context = ssl.create_default_context(cadata=ca_pem)
    key_pem, csr = new_key_and_csr(agent_id)
    answer = await call(
        url,
        "POST",
        "/v1/register",
        {"token": token, "agent_id": agent_id, "csr": csr},
        context=context,
        timeout=timeout,
    )
    Identity(state_dir).save(key_pem, answer["certificate"], ca_pem)
    return {k: v for k, v in answer.items() if k not in {"certificate", "ca_certificate"}}
