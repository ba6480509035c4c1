"""LDIF (RFC 2849) content records: read a seed file, write one (for slapd seed files in benchmarks).

Reading accepts ``version: 1``, comments, folded lines (a leading space continues the previous line),
``::`` base64 values and an optional ``changetype: add``; it refuses other change types, ``:<`` URL
values and controls with an ``LdifError`` naming the line. Base64 values of non-binary attributes that
are UTF-8 become ``str``; others stay ``bytes``.

Writing emits ``version: 1``, base64 for any value that is not an RFC 2849 SAFE-STRING (bytes,
non-ASCII, leading space/colon/``<``, trailing space, CR/LF/NUL) and folds lines at 76 columns;
``read(write(x)) == x``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from plugins.directory import AttrValue, DirectoryError
from plugins.ldapfilter import BINARY_ATTRIBUTES

Record = tuple[str, dict[str, list[AttrValue]]]
_WIDTH = 76


class LdifError(DirectoryError):
    """The LDIF text does not parse (the message names the line)."""


def read_ldif(path: str | Path) -> list[Record]:
    """Parse an LDIF file of content (or ``changetype: add``) records."""
    return list(parse_ldif(Path(path).read_text(encoding="utf-8"), source=str(path)))


def parse_ldif(text: str, *, source: str = "<ldif>") -> Iterator[Record]:
    """Yield (dn, attributes) for each record of ``text``, in order."""
    for position, (number, lines) in enumerate(_records(text)):
        if position == 0 and _is_version(lines[0][1]):
            lines = lines[1:]
            if not lines:  # "version: 1" stands alone, then a blank line
                continue
        yield _record(lines, f"{source}:{number}")


def _is_version(line: str) -> bool:
    return line.lower().replace(" ", "") == "version:1"


def _records(text: str) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """Unfold lines, drop comments, and group lines into records separated by blank lines."""
    record: list[tuple[int, str]] = []
    in_comment = False
    # Only LF (or CRLF) ends a line (RFC 2849 SEP): str.splitlines would also split at form feeds.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if line.startswith(" ") and (record or in_comment):
            if not in_comment:
                record[-1] = (record[-1][0], record[-1][1] + line[1:])
            continue
        in_comment = line.startswith("#")
        if in_comment:
            continue
        if not line.strip():
            if record:
                yield record[0][0], record
                record = []
            continue
        record.append((number, line))
    if record:
        yield record[0][0], record


def _record(lines: list[tuple[int, str]], where: str) -> Record:
    dn_name, dn_value = _pair(*lines[0], where)
    if dn_name.lower() != "dn":
        raise LdifError(f"{where}: a record must start with 'dn:', not {dn_name!r}")
    if isinstance(dn_value, bytes):
        raise LdifError(f"{where}: the base64 DN is not UTF-8")
    attributes: dict[str, list[AttrValue]] = {}
    spelled: dict[str, str] = {}
    for number, line in lines[1:]:
        name, value = _pair(number, line, where)
        lower = name.lower()
        if lower == "changetype":
            if value != "add":
                raise LdifError(f"line {number}: changetype {value!r} is not supported in a seed file (only add)")
            continue
        if lower == "control":
            raise LdifError(f"line {number}: LDIF controls are not supported")
        attributes.setdefault(spelled.setdefault(lower, name), []).append(value)
    return dn_value, attributes


def _pair(number: int, line: str, where: str) -> tuple[str, AttrValue]:
    name, colon, rest = line.partition(":")
    if not colon or not name or " " in name:
        raise LdifError(f"line {number} ({where}): expected 'attribute: value', got {line[:60]!r}")
    if rest.startswith(":"):
        try:
            raw = base64.b64decode(rest[1:].strip(), validate=True)
        except binascii.Error:
            raise LdifError(f"line {number}: bad base64 value for {name!r}") from None
        if name.split(";", 1)[0].lower() in BINARY_ATTRIBUTES:
            return name, raw
        try:
            return name, raw.decode("utf-8")
        except UnicodeDecodeError:
            return name, raw
    if rest.startswith("<"):
        raise LdifError(f"line {number}: URL values (':<') are not supported")
    return name, rest.lstrip(" ")


def _safe(value: str) -> bool:
    if not value:
        return True
    if value[0] in " :<" or value[-1] == " " or not value.isascii():
        return False
    return not any(char in value for char in "\x00\r\n")


def _line(name: str, value: AttrValue) -> str:
    if isinstance(value, str) and _safe(value):
        text = f"{name}: {value}"
    else:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        text = f"{name}:: {base64.b64encode(raw).decode('ascii')}"
    if len(text) <= _WIDTH:
        return text
    parts = [text[:_WIDTH]]
    parts.extend(" " + text[start : start + _WIDTH - 1] for start in range(_WIDTH, len(text), _WIDTH - 1))
    return "\n".join(parts)


def format_entry(dn: str, attributes: Mapping[str, Sequence[AttrValue]]) -> str:
    """One LDIF content record (no trailing blank line)."""
    lines = [_line("dn", dn)]
    lines.extend(_line(name, value) for name, values in attributes.items() for value in values)
    return "\n".join(lines)


def write_ldif(records: Iterable[tuple[str, Mapping[str, Sequence[AttrValue]]]], stream: TextIO) -> int:
    """Write ``version: 1`` and every record; return how many were written."""
    stream.write("version: 1\n")
    count = 0
    for dn, attributes in records:
        stream.write("\n" + format_entry(dn, attributes) + "\n")
        count += 1
    return count
