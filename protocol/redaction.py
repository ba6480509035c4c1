"""Masking of credentials in text: URLs with a password, connection strings with a key.

``redact_text`` keeps what helps a reader (scheme, user, host) and replaces the secret with
``***``. The agent's log processor and every error message that repeats a URL from configuration
use it, so a password typed into a config file never reaches a terminal or a log.
"""

from __future__ import annotations

import re

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I)
_CONN_STRING_KEY = re.compile(r"(SharedAccessKey|SharedAccessSignature|AccountKey|Password)=([^;]+)", re.I)
REDACTED = "***"


def redact_text(text: str) -> str:
    """Mask credentials inside URLs and connection strings."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    return _CONN_STRING_KEY.sub(lambda m: f"{m[1]}={REDACTED}", text)
