"""Settings of the memory directory (``MemorySettings``) and its fault injection (``FaultSettings``).

Every field has a working default: ``MemorySettings()`` is an empty OpenLDAP-flavoured directory at
``dc=example,dc=com`` with no latency and no faults. Both models are frozen and reject unknown keys,
so a typo in a config file fails at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plugins import dn
from plugins.directory import InvalidDNError
from plugins.memory.latency import FixedLatency, Latency, coerce_latency

Flavor = Literal["openldap", "ad"]


class FaultSettings(BaseModel):
    """Injected failures, drawn once per round trip from a generator seeded with ``seed``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of round trips that fail with UnavailableError."
    )
    disconnect_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share that drop the connection (UnavailableError; the next call reconnects).",
    )
    timeout_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share that hang for timeout_seconds, then fail with DirectoryTimeoutError.",
    )
    timeout_seconds: float = Field(default=1.0, ge=0, description="How long a timed-out round trip hangs, in seconds.")
    seed: int = Field(default=0, description="Seed of the fault and latency random generator (repeatable runs).")

    @model_validator(mode="after")
    def _at_most_one(self) -> FaultSettings:
        if self.error_rate + self.disconnect_rate + self.timeout_rate > 1:
            raise ValueError("error_rate + disconnect_rate + timeout_rate must not exceed 1")
        return self


class MemorySettings(BaseModel):
    """Configuration of one in-memory directory instance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_dn: str = Field(default="dc=example,dc=com", description="Naming context; its entry exists from the start.")
    flavor: Flavor = Field(
        default="openldap",
        description="Operational attributes to maintain: openldap (entryUUID, timestamps, entryCSN) or "
        "ad (objectGUID, objectSid, uSNCreated/uSNChanged, whenCreated/whenChanged).",
    )
    seed_ldif: Path | None = Field(
        default=None, description="LDIF file (RFC 2849) loaded at first open, after the base."
    )
    seed_users: int = Field(default=0, ge=0, description="Sample users generated under ou=people at first open.")
    seed_groups: int = Field(default=0, ge=0, description="Sample groups (with members) generated under ou=groups.")
    seed: int = Field(default=0, description="Seed for generated sample data and identifiers (repeatable runs).")
    domain_sid: str | None = Field(
        default="S-1-5-21-1004336348-1177238915-682003330",
        description="flavor ad: domain SID for objectSid of users and groups; None to leave objectSid out.",
    )
    latency: Latency = Field(default=FixedLatency(), description="Delay of each simulated round trip.")
    faults: FaultSettings = Field(default=FaultSettings(), description="Injected failures.")
    page_size_limit: int = Field(
        default=1000, ge=1, description="Largest page the server returns (like AD MaxPageSize)."
    )
    changelog_limit: int = Field(default=10_000, ge=1, description="Changes kept; older watermarks need a full sync.")

    _coerce_latency = field_validator("latency", mode="before")(coerce_latency)

    @field_validator("base_dn")
    @classmethod
    def _valid_base(cls, value: str) -> str:
        try:
            rdns = dn.parse(value)
        except InvalidDNError as exc:
            raise ValueError(str(exc)) from None
        if not rdns:
            raise ValueError("base_dn must not be empty")
        return value

    @field_validator("seed_ldif")
    @classmethod
    def _readable_ldif(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{str(value)!r} is not a file (the LDIF loaded at first open)")
        return value

    @field_validator("domain_sid")
    @classmethod
    def _valid_sid(cls, value: str | None) -> str | None:
        if value is not None:
            parts = value.split("-")
            if len(parts) < 4 or parts[0] != "S" or not all(part.isdigit() for part in parts[1:]):
                raise ValueError(f"domain_sid {value!r} is not a SID such as S-1-5-21-1-2-3")
        return value
