"""The agent's HTTPS client for the control plane: JSON calls with clear, classified failures.

``ControlPlaneUnavailableError`` (connection refused, TLS or timeout trouble, 5xx): retry later and
keep serving. ``ControlPlaneRefusedError`` (4xx with ``{"error", "detail"}``): the control plane
said no; ``code`` tells which (``agent_revoked``, ``token_used``, …).
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp


class LifecycleError(Exception):
    """Root of the agent lifecycle's errors."""


class ControlPlaneUnavailableError(LifecycleError):
    """The control plane could not be reached or failed; worth retrying."""


class ControlPlaneRefusedError(LifecycleError):
    """The control plane refused the call (``status``, ``code``, and its explanation)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"control plane refused ({status} {code}): {detail}")
        self.status = status
        self.code = code
        self.detail = detail


async def call(url: str, method: str, path: str, body: Any, *, context: ssl.SSLContext | bool, timeout: float) -> Any:
    """One JSON call; returns the decoded body of a 2xx answer (text for non-JSON answers)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.request(method, url.rstrip("/") + path, json=body, ssl=context) as response,
        ):
            is_json = response.content_type == "application/json"
            payload = await response.json() if is_json else await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ControlPlaneUnavailableError(f"control plane {url} unreachable: {exc or type(exc).__name__}") from exc
    if response.status >= 500:
        raise ControlPlaneUnavailableError(f"control plane {url} failed ({response.status}): {payload}")
    if response.status >= 400:
        info = payload if isinstance(payload, dict) else {}
        raise ControlPlaneRefusedError(
            response.status, str(info.get("error", "refused")), str(info.get("detail", payload))
        )
    return payload
