"""Operational attributes the memory directory maintains, per flavor (``openldap`` or ``ad``).

- openldap: ``entryUUID`` (uuid4 text, the anchor), ``createTimestamp``/``modifyTimestamp``
  (generalized time) and ``entryCSN``; all hidden unless asked for (by name or ``+``), like slapd.
- ad: ``objectGUID`` (16 raw bytes, the anchor), ``objectSid`` for users/groups/computers when a domain
  SID is set, ``uSNCreated``/``uSNChanged`` and ``whenCreated``/``whenChanged``; returned with the user
  attributes, like Active Directory.

Guarantees: clients can neither set nor change these attributes (``ConstraintError``); the anchor
never changes for the life of an entry; identifiers come from the seeded generator given here.
"""

from __future__ import annotations

import random
import struct
import uuid
from collections.abc import Callable
from datetime import datetime

from plugins.directory import Attributes

Clock = Callable[[], datetime]


class Operational:
    """Stamps operational attributes on entries as they are added and modified."""

    anchor: str = ""
    #: Attributes clients may not write (lower-case).
    system: frozenset[str] = frozenset()
    #: Attributes left out of "all user attributes" (lower-case).
    hidden: frozenset[str] = frozenset()
    #: Whether a missing RDN value is added to the entry (AD) or refused (slapd: namingViolation).
    adds_rdn_values: bool = False

    def __init__(self, rng: random.Random, clock: Clock) -> None:
        self._rng = rng
        self._clock = clock

    def new_uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def on_add(self, attributes: Attributes) -> None:
        raise NotImplementedError

    def on_modify(self, attributes: Attributes) -> None:
        raise NotImplementedError


class OpenLdapOperational(Operational):
    anchor = "entryUUID"
    system = frozenset(
        {
            "entryuuid",
            "createtimestamp",
            "modifytimestamp",
            "entrycsn",
            "creatorsname",
            "modifiersname",
            "structuralobjectclass",
            "entrydn",
            "hassubordinates",
        }
    )
    hidden = system
    adds_rdn_values = False

    def __init__(self, rng: random.Random, clock: Clock) -> None:
        super().__init__(rng, clock)
        self._csn_count = 0

    def _stamp(self) -> tuple[str, str]:
        now = self._clock()
        self._csn_count += 1
        csn = f"{now:%Y%m%d%H%M%S}.{now.microsecond:06d}Z#{self._csn_count & 0xFFFFFF:06x}#000#000000"
        return f"{now:%Y%m%d%H%M%S}Z", csn

    def on_add(self, attributes: Attributes) -> None:
        stamp, csn = self._stamp()
        attributes.set("entryUUID", [str(self.new_uuid())])
        attributes.set("createTimestamp", [stamp])
        attributes.set("modifyTimestamp", [stamp])
        attributes.set("entryCSN", [csn])

    def on_modify(self, attributes: Attributes) -> None:
        stamp, csn = self._stamp()
        attributes.set("modifyTimestamp", [stamp])
        attributes.set("entryCSN", [csn])


class ActiveDirectoryOperational(Operational):
    anchor = "objectGUID"
    system = frozenset({"objectguid", "objectsid", "usncreated", "usnchanged", "whencreated", "whenchanged"})
    hidden = frozenset()
    adds_rdn_values = True
    _SECURITY_PRINCIPALS = frozenset({"user", "group", "computer"})

    def __init__(self, rng: random.Random, clock: Clock, domain_sid: str | None) -> None:
        super().__init__(rng, clock)
        self._usn = 4096
        self._rid = 1103
        self._domain_sid = domain_sid

    def _tick(self) -> tuple[str, str]:
        self._usn += 1
        return str(self._usn), f"{self._clock():%Y%m%d%H%M%S}.0Z"

    def on_add(self, attributes: Attributes) -> None:
        usn, when = self._tick()
        attributes.set("objectGUID", [self.new_uuid().bytes_le])
        classes = {str(value).lower() for value in attributes.get("objectClass", [])}
        if self._domain_sid and classes & self._SECURITY_PRINCIPALS:
            self._rid += 1
            attributes.set("objectSid", [sid_bytes(f"{self._domain_sid}-{self._rid}")])
        attributes.set("uSNCreated", [usn])
        attributes.set("uSNChanged", [usn])
        attributes.set("whenCreated", [when])
        attributes.set("whenChanged", [when])

    def on_modify(self, attributes: Attributes) -> None:
        usn, when = self._tick()
        attributes.set("uSNChanged", [usn])
        attributes.set("whenChanged", [when])


def sid_bytes(sid: str) -> bytes:
    """The binary form of a SID string ``S-1-5-21-…`` (as objectSid holds it)."""
    parts = sid.split("-")
    revision, authority, subs = int(parts[1]), int(parts[2]), [int(part) for part in parts[3:]]
    return struct.pack("<BB", revision, len(subs)) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
