"""LDAP result codes → the ``plugins.directory`` error family (``plugins.ldap.errors.translate``)."""

from __future__ import annotations

import bonsai
import pytest

from plugins.directory import (
    ConstraintError,
    DirectoryError,
    LimitExceededError,
    NotAllowedError,
    UnavailableError,
    WriteOutcomeUnknownError,
)
from plugins.ldap.errors import connection_is_reusable, server_answered, translate


def _result(code: int, text: str) -> bonsai.LDAPError:
    """An LDAP error result as bonsai raises it (its own class for the code, the server's text)."""
    return type(f"Result{code}", (bonsai.LDAPError,), {"code": code})(text)


@pytest.mark.parametrize(
    ("code", "kind", "meaning"),
    [
        (1, UnavailableError, "operationsError"),
        (4, LimitExceededError, "sizeLimitExceeded"),
        (11, LimitExceededError, "adminLimitExceeded"),
        (53, ConstraintError, "unwillingToPerform"),
        (80, UnavailableError, "failed internally"),
    ],
)
def test_result_codes_get_a_class_and_say_what_they_mean(code: int, kind: type[DirectoryError], meaning: str) -> None:
    """operationsError and other are the server's trouble (retried, 503), the limits and unwillingToPerform
    refuse the request (4xx, never ``mutability``); each message keeps the server's text and names the code."""
    error = translate(_result(code, "server says why"), context="modify 'cn=x'")
    assert type(error) is kind
    assert not isinstance(error, NotAllowedError)
    assert str(error).startswith("modify 'cn=x': server says why (LDAP result ")
    assert f"LDAP result {code}, " in str(error)
    assert meaning in str(error)


def test_a_result_from_the_server_is_told_from_a_failure_on_the_way() -> None:
    """An error result (even busy) ended the operation on the server; a lost connection or a timeout did not."""
    assert server_answered(_result(51, "busy"))
    assert server_answered(bonsai.SizeLimitError("Size limit exceeded."))
    assert not server_answered(bonsai.ConnectionError("Can't contact LDAP server."))
    assert not server_answered(bonsai.TimeoutError("timed out"))
    assert not server_answered(TimeoutError())
    assert not server_answered(OSError("reset"))


def test_a_write_of_unknown_outcome_drops_its_connection() -> None:
    """The connection a write was lost on is not lent again; one that got an error result is."""
    assert not connection_is_reusable(WriteOutcomeUnknownError("add 'cn=x': no answer"))
    assert connection_is_reusable(LimitExceededError("search: size limit"))
