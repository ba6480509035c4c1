"""SCIM errors (RFC 7644 §3.12) and the root of every protocol error.

A ``ScimError`` carries an HTTP status, an optional ``scimType`` and a human detail; ``to_body``
renders the RFC 7644 error resource. Protocol failures that are not SCIM errors (a malformed
envelope, a bad signature) derive from ``ProtocolError``.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


class ProtocolError(Exception):
    """Root of every error raised by ``protocol``."""


class ScimError(ProtocolError):
    """A SCIM error response: status, ``scimType`` (RFC 7644 table 9) and detail."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body

    def __repr__(self) -> str:
        return f"ScimError({self.status}, {self.scim_type!r}, {self.detail!r})"


def invalid_filter(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidFilter")


def invalid_syntax(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidSyntax")


def invalid_path(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidPath")


def invalid_value(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidValue")


def no_target(detail: str) -> ScimError:
    return ScimError(400, detail, "noTarget")


def mutability(detail: str) -> ScimError:
    return ScimError(400, detail, "mutability")


def too_many(detail: str) -> ScimError:
    return ScimError(400, detail, "tooMany")


def uniqueness(detail: str) -> ScimError:
    return ScimError(409, detail, "uniqueness")


def not_found(detail: str) -> ScimError:
    return ScimError(404, detail)


def unauthorized(detail: str) -> ScimError:
    return ScimError(401, detail)


def forbidden(detail: str) -> ScimError:
    return ScimError(403, detail)


def payload_too_large(detail: str) -> ScimError:
    return ScimError(413, detail)


def unavailable(detail: str) -> ScimError:
    return ScimError(503, detail)


def internal(detail: str) -> ScimError:
    return ScimError(500, detail)
