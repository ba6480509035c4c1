"""Work-arounds for bonsai 1.5 behaviour that breaks on valid data; applied once on import.

Settings: none. Guarantees:
- bonsai validates every DN (including each DN a server returns) with a regular expression that
  rejects what RFC 4514 allows unescaped inside a value: ``#`` after the first character and ``=``.
  slapd returns such DNs (``cn=a\\2Cb#c``), and bonsai then fails the whole search, or reports a
  rename that the server has already applied as an error. ``install`` swaps in an RFC 4514 pattern
  that accepts them; bonsai's own escaping and comparison code is left as it is.
- bonsai's rename splits the new DN itself: it cuts the new parent at the *old* DN's depth (a move to
  a deeper parent loses its last RDNs) and splits on every comma preceded by no backslash (wrong for
  a value ending in an escaped backslash). ``RenameTarget`` hands bonsai the RDN and parent we
  computed with ``plugins.dn``.
"""

from __future__ import annotations

import re
from typing import Any

from bonsai.ldapdn import LDAPDN

_TYPE = r"\s*(?:[A-Za-z][\w-]*|\d+(?:\.\d+)*)\s*"
_PAIR = r'\\(?:[,=+<>#;\\" ]|[\dA-Fa-f]{2})'
# A value is characters and escape pairs, bare or quoted: (char|pair)* written as char*(pair char*)*,
# the same strings, which the regex engine matches as runs of characters instead of one alternation per
# character (a DN is checked for every entry a search returns: 2.8 -> 1.2 us). RFC 4514's third form, a
# '#' and hex digits, is left out: every such string is a bare value too, and with both ways to read it
# a DN that fails the check was tried in 2^n ways for its n hex values (seconds at n = 20).
_VALUE = rf'[^,+<>;\\"]*(?:{_PAIR}[^,+<>;\\"]*)*|"[^\\"]*(?:{_PAIR}[^\\"]*)*"'
_RDN = rf"{_TYPE}=(?:{_VALUE})(?:\+{_TYPE}=(?:{_VALUE}))*"
RFC4514_DN = re.compile(rf"(?:{_RDN})(?:[,;](?:{_RDN}))*\Z")


def install() -> None:
    """Make bonsai accept every RFC 4514 DN (idempotent)."""
    LDAPDN._dnregex = RFC4514_DN


class RenameTarget(LDAPDN):
    """The new DN of a rename, whose RDN (index 0) and parent (any slice) are fixed, not re-split."""

    def __init__(self, new_dn: str, rdn: str, parent: str) -> None:
        super().__init__(new_dn)
        self._rdn = rdn
        self._parent = parent

    def __getitem__(self, index: Any) -> str:
        if isinstance(index, slice):
            return self._parent
        if index == 0:
            return self._rdn
        return str(super().__getitem__(index))
