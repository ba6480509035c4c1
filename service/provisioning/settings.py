"""Settings of one provisioning job (``JobSettings``), stored with the job as JSON.

Every field has a default that works: requests time out after 10 minutes and are retried (with a
fresh request id, so any agent of the domain may take them) three times; out-of-scope users are
disabled; more than 500 deletions in a cycle are staged for approval; three failed cycles in a row
put the job in quarantine, retried with a backoff growing to hourly, then daily. ``mapping`` and
``scoping`` are handed as they are to the mapping and scoping modules (``scoping.out_of_scope``
stands in for ``out_of_scope`` when that is not set).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from service.client import DEFAULT_BATCH_LINGER

HOUR = 3600.0
DAY = 86_400.0


class NotifySettings(BaseModel):
    """Where quarantine (and staged-deletion) notifications go: a webhook, e-mail, or both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_url: str | None = Field(default=None, description="POSTed a JSON event (job, event, reason, time).")
    webhook_timeout: float = Field(default=10.0, gt=0, description="Seconds a webhook POST may take.")
    smtp_host: str | None = Field(default=None, description="SMTP server; unset: no e-mail.")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = Field(default=False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = Field(default="cloudprov@localhost", description="Sender of notification e-mails.")
    mail_to: list[str] = Field(default_factory=list, description="Recipients of notification e-mails.")


class JobSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: float = Field(default=600.0, gt=0, description="Seconds a request to an agent may take.")
    attempts: int = Field(default=3, ge=1, description="Tries of a request that timed out (each a new request).")
    batch_linger: float = Field(
        default=DEFAULT_BATCH_LINGER,
        ge=0,
        le=1,
        description="Seconds a request may wait for the job's other requests in flight to share its batch "
        "signature (0: requests sent in one event-loop turn share one, no wait).",
    )
    page_size: int = Field(default=1000, ge=1, le=10_000, description="Resources per page of a full sync.")
    change_batch: int = Field(default=1000, ge=1, le=10_000, description="Changes per /Changes request.")
    out_of_scope: Literal["disable", "delete"] = Field(
        default="disable", description="What happens to a user that leaves scope (groups are deleted)."
    )
    deletion_threshold: int = Field(
        default=500, ge=0, description="More deletions than this in one cycle are staged for approval (0: off)."
    )
    matching_attribute: str | None = Field(
        default=None, description="Target attribute matching an unanchored object on first sync (e.g. userName)."
    )
    retry_backoff: float = Field(
        default=120.0,
        ge=0,
        description="Seconds an object that failed twice waits before it is tried again (the next cycle "
        "retries a first failure); the wait doubles with each further failure.",
    )
    retry_backoff_max: float = Field(
        default=21_600.0, ge=0, description="Longest wait between tries of an object that keeps failing (seconds)."
    )
    quarantine_after: int = Field(default=3, ge=1, description="Failed cycles in a row before quarantine.")
    quarantine_daily_after: int = Field(
        default=24, ge=1, description="Failed retries in quarantine (backoff up to hourly) before daily retries."
    )
    lease_ttl: float = Field(default=60.0, gt=0, description="Seconds a replica's lease on the job lasts unrenewed.")
    mapping: dict[str, Any] = Field(default_factory=dict, description="Attribute mappings (see the mapping module).")
    scoping: dict[str, Any] = Field(default_factory=dict, description="Scoping rules (see the scoping module).")
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @model_validator(mode="before")
    @classmethod
    def _scoping_out_of_scope(cls, data: Any) -> Any:
        """``scoping.out_of_scope`` (the scoping module's key) applies when ``out_of_scope`` is not set."""
        if isinstance(data, dict) and "out_of_scope" not in data:
            scoping = data.get("scoping")
            if isinstance(scoping, dict) and scoping.get("out_of_scope") in ("disable", "delete"):
                return {**data, "out_of_scope": scoping["out_of_scope"]}
        return data

    def quarantine_delay(self, failures: int, schedule: float) -> float:
        """Seconds until the next try of a job that failed ``failures`` cycles in a row."""
        beyond = failures - self.quarantine_after
        if beyond >= self.quarantine_daily_after:
            return DAY
        return float(min(HOUR, max(schedule, 1.0) * 2.0 ** (beyond + 1)))
