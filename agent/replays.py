"""The replay memory across restarts: the ids an agent accepted, saved when it stops, restored when it starts.

A request stays valid until its deadline (up to ``signing.max_lifetime``, 15 minutes). Without this, a
copy of a request the agent had accepted, published again after a restart within that time, would be
taken as new: a write applied a second time. The agent saves its ``ReplayGuard`` to
``agent.state_dir/replay-memory.json`` when it stops and restores the ids still live when it starts.
A process that is killed saves nothing: docs/operator-guide.md says what covers that case.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import structlog

from protocol.signing import ReplayGuard

FILE_NAME = "replay-memory.json"
VERSION = 1

_log = structlog.get_logger("cloudprov.replays")


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def save(guard: ReplayGuard, path: Path, *, now: float | None = None) -> int:
    """Write the guard's live ids to ``path`` (atomically, owner-only); how many. ``OSError`` if it cannot."""
    now = time.time() if now is None else now
    live = [[request_id, until] for request_id, until in guard.entries() if until >= now]
    document = {"v": VERSION, "saved_at": now, "floor": guard.floor if guard.floor > -math.inf else None, "ids": live}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(document, out, separators=(",", ":"))
    os.replace(partial, path)
    return len(live)


def restore(guard: ReplayGuard, path: Path, *, now: float | None = None) -> int:
    """Remember the still-live ids saved in ``path``; how many (0 without a file). ``ValueError`` names what
    is wrong with a file that is there but unreadable."""
    now = time.time() if now is None else now
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("v") != VERSION or not isinstance(document.get("ids"), list):
        raise ValueError(f"{path} is not a version {VERSION} replay memory")
    entries: list[tuple[str, float]] = []
    for item in document["ids"]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"{path}: an entry is not [id, deadline]: {str(item)[:80]}")
        until = item[1]
        if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(until):
            raise ValueError(f"{path}: the deadline of {item[0][:64]!r} is not a number")
        entries.append((item[0], float(until)))
    floor = document.get("floor")
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not math.isfinite(floor):
        floor = -math.inf  # none was forgotten while live (saved as null)
    before = len(guard)
    guard.restore(entries, float(floor), now)
    return len(guard) - before


def restore_logged(guard: ReplayGuard, state_dir: Path) -> None:
    """``restore`` at start, logged; a bad file is reported and ignored (the agent still starts)."""
    path = path_in(state_dir)
    try:
        count = restore(guard, path)
    except ValueError as exc:
        _log.warning("replay memory not restored; requests accepted before the restart are not known", error=str(exc))
        return
    if count:
        _log.info("replay memory restored", ids=count, path=str(path))


def save_logged(guard: ReplayGuard, state_dir: Path) -> None:
    """``save`` at stop, logged; a failure is reported (the agent still stops)."""
    path = path_in(state_dir)
    try:
        count = save(guard, path)
    except OSError as exc:
        _log.warning("replay memory not saved; a restart forgets the requests accepted", error=str(exc))
        return
    _log.info("replay memory saved", ids=count, path=str(path))
