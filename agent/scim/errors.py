"""Directory errors as SCIM errors: every ``DirectoryError`` a plugin raises gets its RFC 7644 status."""

from __future__ import annotations

from plugins.directory import (
    AlreadyExistsError,
    ConstraintError,
    DirectoryError,
    InsufficientAccessError,
    InvalidDNError,
    InvalidFilterError,
    LimitExceededError,
    NoSuchObjectError,
    NotAllowedError,
    UnavailableError,
    WriteOutcomeUnknownError,
)
from protocol.errors import ScimError

_MAP: tuple[tuple[type[DirectoryError], int, str | None], ...] = (
    (NoSuchObjectError, 404, None),
    (AlreadyExistsError, 409, "uniqueness"),
    (LimitExceededError, 400, "tooMany"),
    (ConstraintError, 400, "invalidValue"),
    (NotAllowedError, 400, "mutability"),
    (InsufficientAccessError, 403, None),
    (InvalidFilterError, 400, "invalidFilter"),
    (InvalidDNError, 400, "invalidValue"),
    (UnavailableError, 503, None),
    # 503, but not transient (not an UnavailableError): the agent answers it and does not take the request
    # again, since the write may have been applied; the caller reads the resource to learn the outcome
    (WriteOutcomeUnknownError, 503, None),
)


def scim_error(error: DirectoryError) -> ScimError:
    """The SCIM error a client sees for a directory error (500 for anything unexpected)."""
    for kind, status, scim_type in _MAP:
        if isinstance(error, kind):
            return ScimError(status, f"directory: {error}", scim_type)
    return ScimError(500, f"directory: {error}")
