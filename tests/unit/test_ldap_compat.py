"""The DN pattern ``plugins.ldap.compat`` gives bonsai: RFC 4514's grammar, written for speed."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from plugins import dn
from plugins.ldap.compat import RFC4514_DN

# The grammar as RFC 4514 §3 states it, one alternation per character of a value: the oracle.
_TYPE = r"\s*(?:[A-Za-z][\w-]*|\d+(?:\.\d+)*)\s*"
_PAIR = r'\\(?:[,=+<>#;\\" ]|[\dA-Fa-f]{2})'
_VALUE = rf'#(?:[\dA-Fa-f]{{2}})+|(?:[^,+<>;\\"]|{_PAIR})*|"(?:[^\\"]|{_PAIR})*"'
_RDN = rf"{_TYPE}=(?:{_VALUE})(?:\+{_TYPE}=(?:{_VALUE}))*"
GRAMMAR = re.compile(rf"(?:{_RDN})(?:[,;](?:{_RDN}))*\Z")

# Strings made mostly of the characters the grammar cares about, so that both answers come up.
DN_TEXT = st.text(alphabet='cnu=id,;+<>#"\\ 2C0af\u00e9', max_size=40)


@given(DN_TEXT)
@example("cn=a\\2Cb#c,ou=people,dc=example,dc=com")
@example('cn="a,b\\"c",dc=example')
@example("cn=#04024869,dc=example")
@example("cn=a\\")
@example("cn=a\\2")
@example('cn="a')
def test_the_pattern_accepts_what_the_grammar_accepts(text: str) -> None:
    assert (RFC4514_DN.match(text) is not None) == (GRAMMAR.match(text) is not None)


@given(st.lists(st.tuples(st.sampled_from(["cn", "uid", "OU", "2.5.4.3"]), st.text()), min_size=1, max_size=4))
def test_every_escaped_dn_is_accepted(rdns: list[tuple[str, str]]) -> None:
    """What ``plugins.dn`` writes (any value, escaped) is a DN bonsai takes."""
    text = ",".join(f"{name}={dn.escape_value(value)}" for name, value in rdns)
    assert RFC4514_DN.match(text) is not None


def test_a_dn_of_many_hex_values_that_fails_is_refused_at_once() -> None:
    """Hex-string values (``#04AB``) read one way only: a failing DN of many of them is refused without
    trying every combination (with two readings, 60 of them would be 2^60 tries and never end)."""
    hostile = ",".join(f"cn=#{index:04X}" for index in range(60)) + "\\"
    assert RFC4514_DN.match(hostile) is None
    assert RFC4514_DN.match(hostile[:-1]) is not None
