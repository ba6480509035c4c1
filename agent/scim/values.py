"""Conversions between LDAP values and SCIM values for each ``profile.Kind``.

Pure functions. Anchors: entryUUID is text; objectGUID is 16 bytes in little-endian GUID layout
and shows as its usual string form (``uuid.UUID(bytes_le=…)``). Generalized time
(``20240131120000Z``, AD's ``20240131120000.0Z``) shows as ISO 8601 (``2024-01-31T12:00:00Z``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import lru_cache

from agent.scim.profile import Kind
from plugins.directory import AttrValue

# Enum members as module globals: Python 3.11 reads a member from its class (``Kind.STRING``) 5-10
# times slower (its metaclass defines __getattr__), and conversions compare several per attribute of every entry.
_ACTIVE_UAC, _BOOLEAN, _GUID = Kind.ACTIVE_UAC, Kind.BOOLEAN, Kind.GUID
_INTEGER, _TIMESTAMP = Kind.INTEGER, Kind.TIMESTAMP
UAC_ACCOUNTDISABLE = 0x2
UAC_NORMAL_ACCOUNT = 0x200


def text(value: AttrValue) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def anchor_to_id(value: AttrValue, binary: bool) -> str:
    """The SCIM ``id`` for an anchor value (objectGUID bytes → GUID string)."""
    if binary and isinstance(value, bytes) and len(value) == 16:
        return str(uuid.UUID(bytes_le=value))
    return text(value).lower() if binary else text(value)


def id_to_anchor(scim_id: str, binary: bool) -> AttrValue | None:
    """The LDAP anchor value for a SCIM ``id``; None if it cannot be one (not a GUID)."""
    if not binary:
        return scim_id
    try:
        return uuid.UUID(scim_id).bytes_le
    except ValueError:
        return None


def generalized_to_iso(value: str) -> str | None:
    """``20240131120000Z`` / ``20240131120000.0Z`` → ``2024-01-31T12:00:00Z`` (None if unparseable)."""
    if len(value) < 15 or value[14] not in "Z.," or value[-1] != "Z" or not value[:14].isdigit():
        return None
    return f"{value[0:4]}-{value[4:6]}-{value[6:8]}T{value[8:10]}:{value[10:12]}:{value[12:14]}Z"


@lru_cache(maxsize=4096)
def timestamp_to_scim(raw: str) -> str:
    """A generalized time as SCIM shows it (ISO 8601; unparseable text as it is), remembered: a listing
    shows every entry's create and modify stamps, and the same stamps come back listing after listing."""
    return generalized_to_iso(raw) or raw


def iso_to_generalized(value: str) -> str | None:
    """``2024-01-31T12:00:00Z`` (any offset) → ``20240131120000Z`` in UTC (None if unparseable)."""
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def to_scim(kind: Kind, value: AttrValue) -> object:
    """One LDAP value as a SCIM value (references are resolved elsewhere)."""
    raw = text(value)
    if kind is _INTEGER:
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind is _BOOLEAN:
        return raw.upper() == "TRUE"
    if kind is _TIMESTAMP:
        return timestamp_to_scim(raw)
    if kind is _GUID and isinstance(value, bytes) and len(value) == 16:
        return str(uuid.UUID(bytes_le=value))
    if kind is _ACTIVE_UAC:
        try:
            return not int(raw) & UAC_ACCOUNTDISABLE
        except ValueError:
            return True
    return raw


def to_ldap(kind: Kind, value: object) -> AttrValue:
    """One SCIM value as an LDAP value; raises ``ValueError`` with a reason if it cannot be one."""
    if kind is _GUID:
        try:
            return uuid.UUID(str(value)).bytes_le
        except ValueError:
            raise ValueError(f"expected a GUID, got {value!r}") from None
    if kind is _BOOLEAN:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return "TRUE" if value else "FALSE"
    if kind is _INTEGER:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"expected an integer, got {value!r}")
        return str(int(value))
    if kind is _TIMESTAMP:
        converted = iso_to_generalized(str(value))
        if converted is None:
            raise ValueError(f"expected an ISO 8601 dateTime, got {value!r}")
        return converted
    if isinstance(value, dict | list) or value is None:
        raise ValueError(f"expected a simple value, got {type(value).__name__}")
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


def apply_active(uac: AttrValue | None, active: bool) -> str:
    """userAccountControl with ACCOUNTDISABLE cleared (active) or set (inactive)."""
    try:
        current = int(text(uac)) if uac is not None else UAC_NORMAL_ACCOUNT
    except ValueError:
        current = UAC_NORMAL_ACCOUNT
    return str(current & ~UAC_ACCOUNTDISABLE if active else current | UAC_ACCOUNTDISABLE)
