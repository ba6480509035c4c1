"""Service configuration: one YAML file validated into frozen, typed ``ServiceSettings``.

Every setting has a default that works on one machine (HTTPS on 127.0.0.1:8443, state and an
SQLite store in ``./service-state``). Strings may reference the environment as ``${NAME}`` or
``${NAME:-default}``; secrets may be ``file:/path`` (read from a mounted file). Environment
variables ``CLOUDPROV_SERVICE__SECTION__KEY`` override the file. ``load_service_settings`` raises
``ServiceConfigError`` naming each faulty key: store URLs are checked for a scheme with a driver
(without repeating them: they may hold a password), an operator CA for both of its files.
The admin API is off until ``admin.token`` is set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_validator, model_validator

from protocol.configfile import ConfigFileError, HealthServer, LoggingSection, Section, load_model, read_file_ref
from service.store import STORE_SCHEMES

ENV_PREFIX = "CLOUDPROV_SERVICE__"
DAY = 86_400.0


class ServiceConfigError(ConfigFileError):
    """The service configuration is invalid; the message lists each faulty key."""


def _store_url(url: str) -> str:
    """Empty (the default store) or ``sqlite:///…`` / ``postgresql://…``; the URL is not repeated (its password)."""
    if not url:
        return url
    scheme, sep, _ = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):  # else the "scheme" may hold a password
        raise ValueError("not a URL (no scheme://); expected sqlite:///path or postgresql://user:password@host/db")
    if scheme.lower() not in STORE_SCHEMES:
        hint = "; write postgresql://… without a +driver" if scheme.lower().startswith("postgres") else ""
        raise ValueError(f"no store for scheme {scheme!r}: expected sqlite:///path or postgresql://…{hint}")
    return url


#: A secret: literal, ``${ENV}`` or ``file:/path``; never printed.
Secret = Annotated[SecretStr, BeforeValidator(read_file_ref)]
#: The URL of a store: empty (embedded SQLite in the state dir), ``sqlite:///path`` or ``postgresql://…``.
StoreUrl = Annotated[str, AfterValidator(_store_url)]


class ControlSection(Section):
    host: str = Field(default="127.0.0.1", description="Address the HTTPS listener binds.")
    port: int = Field(default=8443, ge=0, le=65535, description="Port of the HTTPS listener (0: any free port).")
    public_hosts: list[str] = Field(
        default=["localhost", "127.0.0.1"], min_length=1, description="Names/IPs in the server certificate."
    )
    state_dir: Path = Field(default=Path("service-state"), description="CA, server certificate, SQLite store.")
    ca_cert_file: Path | None = Field(default=None, description="Operator-provided CA certificate (PEM).")
    ca_key_file: Path | None = Field(default=None, description="Its private key (PEM); both or neither.")
    client_cert_lifetime: float = Field(default=30 * DAY, gt=0, description="Seconds an agent certificate lives.")
    token_ttl: float = Field(
        default=DAY, gt=0, le=30 * DAY, description="Default lifetime of a registration token (s, 30 days at most)."
    )
    bootstrap_interval: float = Field(default=600.0, gt=0, description="Seconds between an agent's bootstraps.")
    heartbeat_interval: float = Field(default=600.0, gt=0, description="Seconds between an agent's heartbeats.")
    active_window: float = Field(default=1800.0, gt=0, description="Seen within this many seconds: active.")
    key_grace_period: float = Field(
        default=DAY, ge=0, le=7 * DAY, description="Seconds a rotated-out signing key stays valid (7 days at most)."
    )
    clock_skew: float = Field(default=300.0, gt=0, description="Bootstrap requests older/newer than this: refused.")

    @field_validator("ca_cert_file", "ca_key_file")
    @classmethod
    def _is_a_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():  # readable is not asked: admin -c only needs the certificate
            raise ValueError(f"{str(path)!r} is not a file" if path.exists() else f"{str(path)!r} does not exist")
        return path

    @model_validator(mode="after")
    def _ca_files_together(self) -> ControlSection:
        if self.ca_cert_file is not None and self.ca_key_file is None:
            raise ValueError("control.ca_key_file is not set: an operator CA needs its key file too (both or neither)")
        if self.ca_key_file is not None and self.ca_cert_file is None:
            raise ValueError(
                "control.ca_cert_file is not set: an operator CA needs its certificate too (both or neither)"
            )
        return self


class StoreSection(Section):
    url: StoreUrl = Field(default="", description="sqlite:///path or postgresql://…; empty: SQLite in the state dir.")
    key_secret: Secret | None = Field(default=None, description="Seals signing private keys at rest (AES-GCM).")


class AdminSection(Section):
    token: Secret | None = Field(default=None, description="Bearer token of the admin API; unset: API disabled.")


class ProvisioningSection(Section):
    enabled: bool = Field(default=True, description="Run the provisioning scheduler next to the control plane.")
    state_url: StoreUrl = Field(
        default="",
        description="sqlite:///path or postgresql://… of the job store; empty: provisioning.db in state_dir.",
    )
    replica: str | None = Field(default=None, description="This replica's name in job leases (default: random).")
    poll: float = Field(default=1.0, gt=0, description="Seconds between looks for jobs that are due.")


class HealthSection(HealthServer):
    """The health and metrics HTTP server (``/healthz``, ``/readyz``, ``/metrics``) of ``cloudprov service run``."""

    port: int = Field(default=8082, ge=0, le=65535, description="Port to listen on (0: a free port, logged at start).")
    check_interval: float = Field(
        default=15.0, gt=0, description="Seconds between store and listener checks for /readyz (the result is cached)."
    )
    check_timeout: float = Field(default=5.0, gt=0, description="Seconds one store or listener check may take.")


class ServiceSettings(Section):
    control: ControlSection = Field(default_factory=ControlSection)
    store: StoreSection = Field(default_factory=StoreSection)
    admin: AdminSection = Field(default_factory=AdminSection)
    provisioning: ProvisioningSection = Field(default_factory=ProvisioningSection)
    health: HealthSection = Field(default_factory=HealthSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.control.state_dir / 'control.db'}"

    @property
    def provisioning_state_url(self) -> str:
        return self.provisioning.state_url or f"sqlite:///{self.control.state_dir / 'provisioning.db'}"


def load_service_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ServiceSettings:
    """Read, interpolate and validate the service's YAML file (None: defaults plus env overrides)."""
    try:
        return load_model(ServiceSettings, path, os.environ if env is None else env, ENV_PREFIX)
    except ConfigFileError as error:
        raise ServiceConfigError(str(error)) from None
