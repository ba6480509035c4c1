"""Directory errors as SCIM errors: every ``DirectoryError`` a plugin raises gets its RFC 7644 status."""

from __future__ import annotations

from plugins.directory import (
    AlreadyExistsError,
    ConstraintError,
    DirectoryError,
    InsufficientAccessError,
    InvalidDNError,
    InvalidFilterError,
    NoSuchObjectError,
    NotAllowedError,
    UnavailableError,
)
from protocol.errors import ScimError

_MAP: tuple[tuple[type[DirectoryError], int, str | None], ...] = (
    (NoSuchObjectError, 404, None),
    (AlreadyExistsError, 409, "uniqueness"),
    (ConstraintError, 400, "invalidValue"),
    (NotAllowedError, 400, "mutability"),
    (InsufficientAccessError, 403, None),
    (InvalidFilterError, 400, "invalidFilter"),
    (InvalidDNError, 400, "invalidValue"),
    (UnavailableError, 503, None),
)


def scim_error(error: DirectoryError) -> ScimError:
    """The SCIM error a client sees for a directory error (500 for anything unexpected)."""
    for kind, status, scim_type in _MAP:
        if isinstance(error, kind):
            return ScimError(status, f"directory: {error}", scim_type)
    return ScimError(500, f"directory: {error}")
