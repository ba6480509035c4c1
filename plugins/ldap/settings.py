"""Settings of the LDAP directory plugin (``directory: {plugin: ldap, ...}`` in the agent's YAML).

Settings: server URLs in failover order (``ldap://``, ``ldaps://``, ``ldapi://``), the bind (simple DN
and password, SASL EXTERNAL over ldapi, or anonymous), TLS (``ldaps://`` or StartTLS, CA file,
verification on by default), the scope (base DNs and an optional filter), paging, the pool, timeouts,
the retry policy, the server flavor and the folder for delta state.
Guarantees: frozen and validated (unknown keys are errors); every field has a default that works
against a local server, except the bind secret, which arrives already resolved from ``${ENV}`` or
``file:`` by the agent's config layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from plugins import dn, ldapfilter
from plugins.directory import InvalidDNError, InvalidFilterError

_SCHEMES = ("ldap://", "ldaps://", "ldapi://")

#: Attributes whose values are returned as raw bytes (Active Directory octet strings and friends).
DEFAULT_BINARY_ATTRIBUTES = (
    "objectGUID",
    "objectSid",
    "sIDHistory",
    "mS-DS-ConsistencyGuid",
    "msExchMailboxGuid",
    "jpegPhoto",
    "thumbnailPhoto",
    "userCertificate",
    "cACertificate",
    "nTSecurityDescriptor",
    "logonHours",
    "tokenGroups",
)


class RetrySettings(BaseModel):
    """How recoverable failures (server down, busy, unavailable, timeout) are retried."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    attempts: int = Field(default=3, ge=1, le=20, description="Tries of one operation, the first included.")
    initial_backoff: float = Field(default=0.1, ge=0, description="First wait between tries (seconds).")
    max_backoff: float = Field(default=5.0, ge=0, description="Longest wait between tries (seconds).")
    jitter: float = Field(default=0.1, ge=0, description="Random extra wait of up to this many seconds.")


class LdapSettings(BaseModel):
    """Connection, scope and behaviour of one LDAP directory (OpenLDAP, Active Directory, any LDAPv3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: tuple[str, ...] = Field(
        default=("ldap://127.0.0.1:389",),
        min_length=1,
        description="Server URLs in failover order: the first reachable one is used, a failed one is skipped "
        "for `failover_hold` seconds.",
    )
    auth: Literal["simple", "external", "anonymous"] = Field(
        default="simple",
        description="simple: bind_dn + password; external: SASL EXTERNAL (ldapi peer credentials "
        "or a TLS client certificate); anonymous: no bind.",
    )
    bind_dn: str | None = Field(default=None, description="DN (or AD user@domain) for a simple bind.")
    password: SecretStr | None = Field(default=None, description="Password for a simple bind (resolved secret).")
    starttls: bool = Field(default=False, description="Upgrade ldap:// connections with StartTLS before binding.")
    ca_file: Path | None = Field(default=None, description="PEM file of the CAs trusted for the server certificate.")
    tls_verify: bool = Field(
        default=True, description="Verify the server certificate and host name. Never turn off outside tests."
    )
    base_dns: tuple[str, ...] = Field(
        default=(),
        description="Subtrees SCIM serves (lists, reads, delta, deletion detection); new entries go under the "
        "first. Empty: the server's default naming context.",
    )
    scope_filter: str | None = Field(
        default=None,
        description="An RFC 4515 filter ANDed into every search within base_dns (SCIM lists and lookups, delta, "
        "deletion scans): objects that do not match are invisible, e.g. (!(isCriticalSystemObject=TRUE)).",
    )
    page_size: int = Field(default=500, ge=1, le=10_000, description="Largest page asked of the server.")
    pool_size: int = Field(default=16, ge=1, le=256, description="Connections at most: one per concurrent operation.")
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect, negotiate TLS and bind.")
    operation_timeout: float = Field(default=30.0, gt=0, description="Seconds one LDAP operation (one page) may take.")
    max_idle: float = Field(
        default=300.0, gt=0, description="Seconds a pooled connection may stay unused before it is closed."
    )
    failover_hold: float = Field(default=30.0, ge=0, description="Seconds a URL that failed to connect is skipped.")
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Retry policy for recoverable errors.")
    flavor: Literal["auto", "ad", "openldap"] = Field(
        default="auto", description="Server flavor; auto reads the rootDSE (AD capabilities → ad, else openldap)."
    )
    binary_attributes: tuple[str, ...] = Field(
        default=DEFAULT_BINARY_ATTRIBUTES, description="Attributes returned as bytes instead of text."
    )
    range_retrieval_limit: int = Field(
        default=1_000_000, ge=1, description="Most values fetched for one ranged attribute (member;range=…)."
    )
    accesslog_base: str = Field(default="cn=accesslog", description="OpenLDAP: the accesslog overlay's database.")
    state_dir: Path = Field(
        default=Path("state"), description="Writable folder for delta state (AD: the anchors of the last scan)."
    )

    @field_validator("urls")
    @classmethod
    def _known_schemes(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            if not url.lower().startswith(_SCHEMES):
                raise ValueError(f"{url!r}: expected ldap://, ldaps:// or ldapi://")
        return urls

    @field_validator("base_dns")
    @classmethod
    def _whole_dns(cls, base_dns: tuple[str, ...]) -> tuple[str, ...]:
        joined = dn.split_by_yaml(base_dns)
        if joined is not None:
            raise ValueError(
                f"{list(base_dns)} looks like the DN {joined!r} split at its commas by YAML; "
                f'quote each DN: base_dns: ["{joined}"]'
            )
        for text in base_dns:
            try:
                dn.parse(text)
            except InvalidDNError as exc:
                raise ValueError(f"{text!r} is not a DN: {exc}") from None
        return base_dns

    @field_validator("scope_filter")
    @classmethod
    def _parses(cls, scope_filter: str | None) -> str | None:
        if scope_filter is not None:
            try:
                ldapfilter.parse(scope_filter)
            except InvalidFilterError as exc:
                raise ValueError(f"not an RFC 4515 filter: {exc}") from None
        return scope_filter

    @model_validator(mode="after")
    def _bind_complete(self) -> LdapSettings:
        if self.auth == "simple" and (self.bind_dn is None or self.password is None):
            raise ValueError("auth: simple needs bind_dn and password")
        return self

    @property
    def encrypted(self) -> bool:
        """Whether every connection is protected (TLS or a local socket), as AD requires for passwords."""
        return all(url.lower().startswith(("ldaps://", "ldapi://")) or self.starttls for url in self.urls)
