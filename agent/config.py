"""Agent configuration: one YAML file validated into frozen, typed settings.

Every setting has a default that works out of the box (local transport, memory directory). String
values may reference the environment as ``${NAME}`` or ``${NAME:-default}``; secrets (and keys) may
also be ``file:/path`` to read them from a mounted file. Environment variables named
``CLOUDPROV__SECTION__KEY`` override the file (``CLOUDPROV__TRANSPORT__URL=amqp://…``).
``load_settings`` raises ``ConfigError`` whose message names each faulty key and its problem.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from protocol import configfile
from protocol.configfile import ConfigFileError, HealthServer, LoggingSection, Section, read_file_ref

ENV_PREFIX = "CLOUDPROV__"
#: Largest ``signing.clock_skew`` and ``signing.max_lifetime`` (seconds): beyond them a signed request stays
#: usable for a replay long after it was sent.
MAX_CLOCK_SKEW, MAX_LIFETIME = 300.0, 3600.0


class ConfigError(ConfigFileError):
    """The configuration is invalid; the message lists each faulty key and what is wrong with it."""


#: A secret: literal, ``${ENV}`` or ``file:/path``; never printed (``SecretStr``).
Secret = Annotated[SecretStr, BeforeValidator(read_file_ref)]
#: A non-secret value that may still come from a mounted file (public keys, CA bundles).
FileOrText = Annotated[str, BeforeValidator(read_file_ref)]
#: Transport options that hold a secret, so may be ``file:/path``: http ``token``, Service Bus ``key`` and
#: ``connection_string``, and any option named like a password, secret or token (not ``token_file``: a path).
SECRET_OPTION = re.compile(r"^(key|connection_string)$|(pass(word)?|secret|token)$", re.I)


class AgentSection(Section):
    id: str = Field(default_factory=socket.gethostname, description="Agent id in responses and logs (host name).")
    domains: list[str] = Field(default=["example.com"], min_length=1, description="Domains this agent serves.")
    state_dir: Path = Field(default=Path("state"), description="Writable folder for the agent's state (keys, stores).")


class TransportSection(Section):
    url: str = Field(default="local://", description="Where requests come from: local://, http://, amqp://, sb://.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Transport-specific options (see docs); secret ones (token, key, connection_string, any password, "
        "secret or token) may be file:/path.",
    )

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, url: str) -> str:
        if "://" not in url:  # the value is not repeated: without a scheme, a password in it cannot be masked
            raise ValueError(
                "not a URL (no scheme://); expected e.g. local://, amqp://host/, sb://ns.servicebus.windows.net/"
            )
        return url

    @field_validator("options")
    @classmethod
    def _read_secret_files(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Secret options (``SECRET_OPTION``) may be ``file:/run/secrets/…``: read them; a failure names the option."""
        read = dict(options)
        errors: list[InitErrorDetails] = []
        for key, value in options.items():
            if not SECRET_OPTION.search(key):
                continue
            try:
                read[key] = read_file_ref(value)
            except ValueError as exc:  # the file's path, never its content
                error = PydanticCustomError("secret_file", "{problem}", {"problem": str(exc)})
                errors.append({"type": error, "loc": (key,), "input": value})
        if errors:  # raised as a ValidationError, so each message is located at transport.options.<key>
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return read


class DirectorySection(BaseModel):
    """``plugin`` picks the backend; the other keys are that plugin's settings, validated by it."""

    model_config = ConfigDict(extra="allow", frozen=True)
    plugin: str = Field(default="memory", description="Directory plugin: memory or ldap.")

    def plugin_settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """Plugin settings may be ``file:/run/secrets/…`` too (a bind password): read them here."""
        if isinstance(data, dict):
            return {key: read_file_ref(value) if key != "plugin" else value for key, value in data.items()}
        return data


class ScimSection(Section):
    profile: str = Field(default="openldap", description="SCIM ↔ LDAP mapping profile: openldap or ad.")
    profile_overrides: dict[str, Any] = Field(default_factory=dict, description="Changes to the profile's mapping.")
    max_page_size: int = Field(default=1000, ge=1, le=10_000, description="Largest `count` a list request may ask for.")
    default_page_size: int = Field(default=100, ge=1, description="Page size when a list request gives no `count`.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body accepted (bytes).")
    cursor_ttl: float = Field(default=300.0, gt=0, description="Seconds an idle list cursor stays open.")
    max_cursors: int = Field(default=64, ge=1, description="Open list cursors at most (oldest closed first).")
    lookup_batch: int = Field(
        default=64,
        ge=1,
        description='Equality lookups (`attr eq "value"`) of one attribute that arrive together, read with one '
        "directory search at most, over a directory where a search is a round trip (LDAP). 1: each alone.",
    )


class SigningSection(Section):
    public_keys: dict[str, FileOrText] = Field(
        default_factory=dict, description="Trusted request-signing keys: key id → Ed25519 public key (base64 or PEM)."
    )
    clock_skew: float = Field(default=30.0, ge=0, description="Seconds of clock difference tolerated on deadlines.")
    max_lifetime: float = Field(default=900.0, gt=0, description="Longest deadline a request may carry (seconds).")
    replay_memory: int = Field(
        default=200_000,
        ge=1000,
        description="Accepted request ids remembered exactly until their deadline, to refuse replays (about 250 "
        "bytes each); more live ids go to Bloom filters (4 bytes each, up to 64 MiB).",
    )

    @field_validator("clock_skew", "max_lifetime")
    @classmethod
    def _bounded(cls, value: float, info: ValidationInfo) -> float:
        limit, why = _SIGNING_BOUNDS[str(info.field_name)]
        if value > limit:
            raise PydanticCustomError(
                f"{info.field_name}_too_large",
                "Input should be at most {limit} seconds: {why}",
                {"limit": int(limit), "why": why},
            )
        return value


#: The largest ``signing`` durations, and why.
_SIGNING_BOUNDS = {
    "clock_skew": (MAX_CLOCK_SKEW, "a larger skew accepts requests long past their deadline"),
    "max_lifetime": (MAX_LIFETIME, "a captured request could be replayed that long"),
}


class DispatcherSection(Section):
    max_in_flight: int = Field(default=64, ge=1, description="Requests handled at once.")
    max_deliveries: int = Field(default=5, ge=1, description="Deliveries before a failing message is dead-lettered.")
    grace_period: float = Field(default=30.0, ge=0, description="Seconds SIGTERM waits for in-flight requests.")
    idempotency_ttl: float = Field(default=3600.0, gt=0, description="Seconds a response is kept for redeliveries.")
    idempotency_max_entries: int = Field(default=100_000, ge=1, description="Responses kept for redeliveries.")


class RetrySection(Section):
    attempts: int = Field(
        default=1,
        ge=1,
        description="Tries of a whole SCIM operation whose directory calls failed recoverably; 1 (the default) "
        "means no retry here: the directory plugin already retries its own operations (e.g. directory.retry "
        "of the ldap plugin), and retrying both multiplies the tries and the wait.",
    )
    initial_backoff: float = Field(default=0.2, ge=0, description="First wait between tries (seconds).")
    max_backoff: float = Field(default=5.0, ge=0, description="Longest wait between tries (seconds).")
    jitter: float = Field(default=0.2, ge=0, description="Random extra wait, up to this many seconds.")


class HealthSection(HealthServer):
    """The health and metrics HTTP server (``/healthz``, ``/readyz``, ``/metrics``) of ``cloudprov agent run``."""

    directory_check_interval: float = Field(
        default=15.0, gt=0, description="Seconds between directory pings for /readyz (the result is cached)."
    )
    directory_check_timeout: float = Field(default=5.0, gt=0, description="Seconds a directory ping may take.")


class ControlPlaneSection(Section):
    """Registration and bootstrap with a control plane; off by default (the embedded defaults need none)."""

    enabled: bool = Field(default=False, description="Bootstrap from the control plane at start and on an interval.")
    url: str = Field(default="", description="The control plane: https://host:8443.")
    state_dir: Path | None = Field(default=None, description="Key, certificate, CA (default: agent.state_dir).")
    ca_file: Path | None = Field(default=None, description="CA of the control plane (default: state_dir/ca.pem).")
    bootstrap_interval: float = Field(default=600.0, gt=0, description="Seconds between bootstraps (until told).")
    jitter: float = Field(default=0.1, ge=0, le=1, description="Random share of the interval added or removed.")
    heartbeat_interval: float = Field(default=600.0, gt=0, description="Seconds between heartbeats (until told).")
    initial_backoff: float = Field(default=1.0, gt=0, description="First wait after a failed bootstrap (seconds).")
    max_backoff: float = Field(default=60.0, gt=0, description="Longest wait between failed bootstraps (seconds).")
    request_timeout: float = Field(default=30.0, gt=0, description="Seconds a call to the control plane may take.")
    renew_before: float = Field(default=7 * 86400.0, ge=0, description="Renew the certificate this long before expiry.")
    stale_after: float = Field(default=3600.0, gt=0, description="Not ready when the last bootstrap is older (s).")

    @model_validator(mode="after")
    def _needs_url(self) -> ControlPlaneSection:
        if self.enabled and not self.url.startswith("https://"):
            raise ValueError("control_plane.url must be https://host:port when control_plane.enabled is true")
        return self


class AgentSettings(Section):
    agent: AgentSection = Field(default_factory=AgentSection)
    transport: TransportSection = Field(default_factory=TransportSection)
    directory: DirectorySection = Field(default_factory=DirectorySection)
    scim: ScimSection = Field(default_factory=ScimSection)
    signing: SigningSection = Field(default_factory=SigningSection)
    dispatcher: DispatcherSection = Field(default_factory=DispatcherSection)
    retry: RetrySection = Field(default_factory=RetrySection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    control_plane: ControlPlaneSection = Field(default_factory=ControlPlaneSection)
    health: HealthSection = Field(default_factory=HealthSection)


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``CLOUDPROV__TRANSPORT__URL=x`` → ``{"transport": {"url": "x"}}`` (``[a, b]`` and ``{k: v}`` as YAML)."""
    return configfile.env_overrides(env, ENV_PREFIX)


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> AgentSettings:
    """Read, interpolate and validate the agent's YAML file (None: defaults plus env overrides)."""
    try:
        return configfile.load_model(AgentSettings, path, os.environ if env is None else env, ENV_PREFIX)
    except ConfigFileError as error:
        raise ConfigError(str(error)) from None
