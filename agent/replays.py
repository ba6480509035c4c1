"""The replay memory across restarts: the ids an agent accepted, saved when it stops, restored when it starts.

A request stays valid until its deadline (up to ``signing.max_lifetime``, 15 minutes). Without this, a
copy of a request the agent had accepted, published again after a restart within that time, would be
taken as new: a write applied a second time. The agent saves its ``ReplayGuard`` (the exact ids and
the Bloom filters of those it let go) to ``agent.state_dir/replay-memory.json`` when it stops and
restores what is still live when it starts. A process that is killed saves nothing: docs/protocol.md
says what covers that case.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import structlog

from protocol.replayguard import ReplayGuard

FILE_NAME = "replay-memory.json"
VERSION = 1

_log = structlog.get_logger("cloudprov.replays")


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def save(guard: ReplayGuard, path: Path, horizon: float) -> int:
    """Write what the guard holds of deadlines from ``horizon`` on to ``path`` (atomically, owner-only); how
    many exact ids. ``OSError`` if it cannot."""
    saved = guard.to_json(horizon)
    document = {"v": VERSION, "saved_at": time.time(), "guard": saved}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)  # left by a save that did not finish: made afresh, owner-only
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(document, out, separators=(",", ":"))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)
    return len(saved["ids"])


def restore(guard: ReplayGuard, path: Path, horizon: float) -> int:
    """Take back what ``save`` wrote to ``path``, of deadlines from ``horizon`` on; how many exact ids (0
    without a file). ``ValueError`` names the file and what is wrong with it."""
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
    if not isinstance(document, dict) or document.get("v") != VERSION or not isinstance(document.get("guard"), dict):
        raise ValueError(f"{path} is not a version {VERSION} replay memory")
    try:
        return guard.restore(document["guard"], horizon)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def restore_logged(guard: ReplayGuard, state_dir: Path, clock_skew: float) -> None:
    """``restore`` at start, logged; a bad file is reported and ignored (the agent still starts)."""
    path = path_in(state_dir)
    try:
        count = restore(guard, path, time.time() - clock_skew)
    except Exception as exc:  # whatever is wrong with the file, the agent starts without it
        _log.warning("replay memory not restored; requests accepted before the restart are not known", error=str(exc))
        return
    if count:
        _log.info("replay memory restored", ids=count, path=str(path))


def save_logged(guard: ReplayGuard, state_dir: Path, clock_skew: float) -> None:
    """``save`` at stop, logged; a failure is reported (the agent still stops)."""
    path = path_in(state_dir)
    try:
        count = save(guard, path, time.time() - clock_skew)
    except OSError as exc:
        _log.warning("replay memory not saved; a restart forgets the requests accepted", error=str(exc))
        return
    except Exception:  # a fault of ours must not keep the agent from stopping
        _log.exception("replay memory not saved; a restart forgets the requests accepted")
        return
    _log.info("replay memory saved", ids=count, path=str(path))
