"""LDAP result codes and bonsai exceptions → the ``plugins.directory`` error family.

Settings: none. Guarantees: ``translate`` never raises and always returns a ``DirectoryError`` whose
message keeps the server's diagnostic text and the numeric result code; ``RECOVERABLE`` lists what a
retry may cure (server down, busy, unavailable, timeouts); ``connection_is_reusable`` tells the pool
whether the connection that raised can serve the next operation.
"""

from __future__ import annotations

import asyncio

import bonsai

from plugins.directory import (
    AlreadyExistsError,
    ConstraintError,
    DirectoryError,
    DirectoryTimeoutError,
    InsufficientAccessError,
    InvalidDNError,
    InvalidFilterError,
    NoSuchObjectError,
    NotAllowedError,
    UnavailableError,
)

RECOVERABLE: tuple[type[BaseException], ...] = (UnavailableError,)


class DirectoryClosedError(DirectoryError):
    """Used before ``open`` or after ``close`` ("closed by us"); not worth retrying."""


class WatermarkExpiredError(DirectoryError):
    """The watermark can no longer be honoured (log purged, other state store): re-read everything."""


_BY_CODE: dict[int, type[DirectoryError]] = {
    3: DirectoryTimeoutError,  # timeLimitExceeded
    7: InsufficientAccessError,  # authMethodNotSupported
    8: InsufficientAccessError,  # strongerAuthRequired
    13: InsufficientAccessError,  # confidentialityRequired
    16: ConstraintError,  # noSuchAttribute (deleting a value that is not there)
    17: ConstraintError,  # undefinedAttributeType
    18: ConstraintError,  # inappropriateMatching
    19: ConstraintError,  # constraintViolation
    20: ConstraintError,  # attributeOrValueExists (as the memory directory says)
    21: ConstraintError,  # invalidAttributeSyntax
    32: NoSuchObjectError,
    34: InvalidDNError,
    48: InsufficientAccessError,  # inappropriateAuthentication
    49: InsufficientAccessError,  # invalidCredentials
    50: InsufficientAccessError,
    51: UnavailableError,  # busy
    52: UnavailableError,  # unavailable
    53: NotAllowedError,  # unwillingToPerform
    54: UnavailableError,  # loopDetect: a referral loop between servers
    64: ConstraintError,  # namingViolation
    65: ConstraintError,  # objectClassViolation
    66: NotAllowedError,  # notAllowedOnNonLeaf
    67: NotAllowedError,  # notAllowedOnRDN
    68: AlreadyExistsError,
    69: ConstraintError,  # objectClassModsProhibited
    71: NotAllowedError,  # affectsMultipleDSAs
    81: UnavailableError,  # client: server down
    85: DirectoryTimeoutError,  # client: timeout
    87: InvalidFilterError,  # client: filter error
    91: UnavailableError,  # client: connect error
    -1: UnavailableError,  # libldap: server down
    -5: DirectoryTimeoutError,
    -7: InvalidFilterError,  # libldap: bad search filter
    -11: UnavailableError,  # libldap: connect error
}


def result_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def translate(exc: BaseException, *, context: str = "") -> DirectoryError:
    """The ``DirectoryError`` for ``exc`` (already one: returned as is)."""
    if isinstance(exc, DirectoryError):
        return exc
    where = f"{context}: " if context else ""
    if isinstance(exc, TimeoutError | bonsai.TimeoutError | asyncio.TimeoutError):
        return DirectoryTimeoutError(f"{where}no answer within the time limit")
    if isinstance(exc, bonsai.ConnectionError | bonsai.ClosedConnection | ConnectionError | OSError):
        return UnavailableError(f"{where}server unreachable or connection lost ({exc})")
    code = result_code(exc) if isinstance(exc, bonsai.LDAPError) else None
    detail = str(exc.args[0]) if exc.args else type(exc).__name__
    kind = _BY_CODE.get(code, DirectoryError) if code is not None else DirectoryError
    return kind(f"{where}{detail} (LDAP result {code})" if code is not None else f"{where}{detail}")


def connection_is_reusable(error: BaseException) -> bool:
    """A completed LDAP result (even an error) leaves the connection usable, and so does a consumer that
    stops reading a paged search between pages; anything else (lost, timed out, cancelled) does not."""
    if isinstance(error, GeneratorExit):
        return True
    return isinstance(error, DirectoryError) and not isinstance(error, UnavailableError)
