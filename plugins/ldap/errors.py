"""LDAP result codes and bonsai exceptions → the ``plugins.directory`` error family.

Settings: none. Guarantees: ``translate`` never raises and always returns a ``DirectoryError`` whose
message keeps the server's diagnostic text and the numeric result code (with a word on what it means
where the server's text is terse); ``RECOVERABLE`` lists what a retry may cure (server down, busy,
unavailable, failing internally, timeouts); ``server_answered`` tells an error result the server sent
(the operation ended there, nothing applied) from a failure on the way (lost, timed out: a write may
have been applied); ``connection_is_reusable`` tells the pool whether the connection that raised can
serve the next operation.
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
    LimitExceededError,
    NoSuchObjectError,
    NotAllowedError,
    UnavailableError,
    WriteOutcomeUnknownError,
)

RECOVERABLE: tuple[type[BaseException], ...] = (UnavailableError,)


class DirectoryClosedError(DirectoryError):
    """Used before ``open`` or after ``close`` ("closed by us"); not worth retrying."""


class WatermarkExpiredError(DirectoryError):
    """The watermark can no longer be honoured (log purged, other state store, not one the plugin wrote):
    re-read everything."""


_BY_CODE: dict[int, type[DirectoryError]] = {
    1: UnavailableError,  # operationsError: out of sequence (AD: the connection's bind is gone); a new one may do
    3: DirectoryTimeoutError,  # timeLimitExceeded
    4: LimitExceededError,  # sizeLimitExceeded (only past the plain first page: directory.py catches it there)
    7: InsufficientAccessError,  # authMethodNotSupported
    8: InsufficientAccessError,  # strongerAuthRequired
    11: LimitExceededError,  # adminLimitExceeded
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
    53: ConstraintError,  # unwillingToPerform: a server policy refuses the request as it is (AD: password rules)
    54: UnavailableError,  # loopDetect: a referral loop between servers
    64: ConstraintError,  # namingViolation
    65: ConstraintError,  # objectClassViolation
    66: NotAllowedError,  # notAllowedOnNonLeaf
    67: NotAllowedError,  # notAllowedOnRDN
    68: AlreadyExistsError,
    69: ConstraintError,  # objectClassModsProhibited
    71: NotAllowedError,  # affectsMultipleDSAs
    80: UnavailableError,  # other: the server failed internally (slapd: database full, commit failed)
    81: UnavailableError,  # client: server down
    85: DirectoryTimeoutError,  # client: timeout
    87: InvalidFilterError,  # client: filter error
    91: UnavailableError,  # client: connect error
    -1: UnavailableError,  # libldap: server down
    -5: DirectoryTimeoutError,
    -7: InvalidFilterError,  # libldap: bad search filter
    -11: UnavailableError,  # libldap: connect error
}


#: What a result code means, added to the server's text where that is terse or misleading.
_MEANING: dict[int, str] = {
    1: "operationsError: the server found the operation out of sequence (on Active Directory: the "
    "connection's bind was lost); a new connection may succeed",
    4: "sizeLimitExceeded: the server returns no more entries to the agent's bind identity; narrow the "
    "filter, or lift that identity's size limit on the server (OpenLDAP olcLimits, AD MaxPageSize)",
    11: "adminLimitExceeded: an administrative limit of the server refused it (a search too costly for "
    "the agent's bind identity, or an entry too big to store)",
    53: "unwillingToPerform: the server refuses the request as it is (its policy, e.g. password rules, "
    "a system object, or a DN outside its naming contexts)",
    80: "other: the server failed internally (e.g. its database is full); see the server's log",
}

#: Result codes a server sends (0 to 80); the API's own codes (81 up, negative) say the client gave up.
_SERVER_CODES = range(81)


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
    if code is None:
        return DirectoryError(f"{where}{detail}")
    meaning = _MEANING.get(code)
    result = f"LDAP result {code}, {meaning}" if meaning else f"LDAP result {code}"
    return _BY_CODE.get(code, DirectoryError)(f"{where}{detail} ({result})")


def server_answered(exc: BaseException) -> bool:
    """Whether ``exc`` is a result the server sent: the operation ended there (an LDAP write is atomic,
    so a write that got an error result was not applied). False for a lost connection or a timeout."""
    if isinstance(exc, bonsai.ConnectionError | bonsai.TimeoutError | bonsai.ClosedConnection):
        return False
    return isinstance(exc, bonsai.LDAPError) and result_code(exc) in _SERVER_CODES


def connection_is_reusable(error: BaseException) -> bool:
    """A completed LDAP result (even an error) leaves the connection usable, and so does a consumer that
    stops reading a paged search between pages; anything else (lost, timed out, cancelled, a write whose
    outcome is unknown) does not."""
    if isinstance(error, GeneratorExit):
        return True
    return isinstance(error, DirectoryError) and not isinstance(error, UnavailableError | WriteOutcomeUnknownError)
