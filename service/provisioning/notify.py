"""Notifications of a job's trouble (quarantine, deletions staged for approval): webhook and e-mail.

Settings: ``NotifySettings`` — ``webhook_url`` (POSTed ``{"job", "event", "reason", "time", ...}`` as
JSON), ``smtp_host``/``smtp_port``/``smtp_starttls``/``smtp_user``/``smtp_password``/``mail_from``/
``mail_to`` (stdlib ``smtplib`` run in a worker thread).

Guarantees
    A notification that cannot be delivered is logged, never raised: a broken webhook must not
    turn a quarantined job into a crashed scheduler. Each channel is bounded by its timeout.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from email.message import EmailMessage
from typing import Any

import aiohttp
import structlog

from service.provisioning.settings import NotifySettings

_log = structlog.get_logger("cloudprov.provisioning")


async def notify(settings: NotifySettings, job_id: str, event: str, reason: str, **extra: Any) -> list[str]:
    """Send ``event`` on every configured channel; the channels that delivered it."""
    payload = {"job": job_id, "event": event, "reason": reason, "time": time.time(), **extra}
    delivered: list[str] = []
    if settings.webhook_url:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout)) as session,
                session.post(settings.webhook_url, json=payload) as response,
            ):
                response.raise_for_status()
            delivered.append("webhook")
        except (aiohttp.ClientError, TimeoutError) as error:
            _log.warning("webhook notification failed", job=job_id, event_name=event, error=str(error))
    if settings.smtp_host and settings.mail_to:
        try:
            await asyncio.to_thread(_send_mail, settings, payload)
            delivered.append("email")
        except (OSError, smtplib.SMTPException) as error:
            _log.warning("e-mail notification failed", job=job_id, event_name=event, error=str(error))
    return delivered


def _send_mail(settings: NotifySettings, payload: dict[str, Any]) -> None:
    message = EmailMessage()
    message["Subject"] = f"cloudprov: job {payload['job']}: {payload['event']}"
    message["From"] = settings.mail_from
    message["To"] = ", ".join(settings.mail_to)
    message.set_content(f"{payload['reason']}\n\n{json.dumps(payload, indent=2, sort_keys=True, default=str)}\n")
    assert settings.smtp_host is not None
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user and settings.smtp_password:
            smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
        smtp.send_message(message)
