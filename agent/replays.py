"""The replay memory across restarts: what an agent accepted and answered, saved when it stops, restored when
it starts.

A request stays valid until its deadline (up to ``signing.max_lifetime``, 15 minutes), and a broker hands
a message out again, flagged as redelivered, when an agent stops holding it. Without this, after a
restart a copy of a request the agent had accepted would be taken as new, and a redelivered copy of one
it had answered would run again: either way a write applied a second time. The agent saves its
``ReplayGuard`` (the exact ids and the Bloom filters of those it let go) and its ``ResponseStore`` (the
answers redeliveries get) to ``agent.state_dir/replay-memory.json`` when it stops, and restores what is
still live when it starts. A process that is killed saves nothing: docs/protocol.md says what covers
that case.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import structlog

from agent.idempotency import ResponseStore
from protocol.replayguard import ReplayGuard

FILE_NAME = "replay-memory.json"
VERSION = 1

_log = structlog.get_logger("cloudprov.replays")


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def save(guard: ReplayGuard, responses: ResponseStore, path: Path, horizon: float) -> tuple[int, int]:
    """Write what the guard holds of deadlines from ``horizon`` on, and the responses kept, to ``path``
    (atomically, owner-only); how many exact ids and responses. ``OSError`` if it cannot."""
    saved = guard.to_json(horizon)
    answers = [[request_id, left, response.decode("utf-8")] for request_id, left, response in responses.entries()]
    document = {"v": VERSION, "saved_at": time.time(), "guard": saved, "responses": answers}
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
    return len(saved["ids"]), len(answers)


def restore(guard: ReplayGuard, responses: ResponseStore, path: Path, horizon: float) -> tuple[int, int]:
    """Take back what ``save`` wrote to ``path``, of deadlines from ``horizon`` on; how many exact ids and
    responses (0, 0 without a file). ``ValueError`` names the file and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0, 0
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("v") != VERSION or not isinstance(document.get("guard"), dict):
        raise ValueError(f"{path} is not a version {VERSION} replay memory")
    try:
        answers = _answers(document.get("responses", []), document.get("saved_at"))
        ids = guard.restore(document["guard"], horizon)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    before = len(responses)
    responses.restore(answers)
    return ids, len(responses) - before


def _answers(items: Any, saved_at: Any) -> list[tuple[str, float, bytes]]:
    """The saved responses, each with the seconds it has left now."""
    if not isinstance(items, list):
        raise ValueError("'responses' is not a list")  # noqa: TRY004 - a damaged file, not a caller's mistake
    if not items:
        return []
    if isinstance(saved_at, bool) or not isinstance(saved_at, int | float) or not math.isfinite(saved_at):
        raise ValueError("'saved_at' is not a time")
    gone = max(0.0, time.time() - saved_at)
    answers = []
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], int | float)
            and not isinstance(item[1], bool)
            and isinstance(item[2], str)
        ):
            raise ValueError(f"a response is not [id, seconds left, envelope]: {str(item)[:80]}")
        answers.append((item[0], float(item[1]) - gone, item[2].encode("utf-8")))
    return answers


def restore_logged(guard: ReplayGuard, responses: ResponseStore, state_dir: Path, clock_skew: float) -> None:
    """``restore`` at start, logged; a bad file is reported and ignored (the agent still starts)."""
    path = path_in(state_dir)
    try:
        ids, answers = restore(guard, responses, path, time.time() - clock_skew)
    except Exception as exc:  # whatever is wrong with the file, the agent starts without it
        _log.warning("replay memory not restored; requests accepted before the restart are not known", error=str(exc))
        return
    if ids or answers:
        _log.info("replay memory restored", ids=ids, responses=answers, path=str(path))


def save_logged(guard: ReplayGuard, responses: ResponseStore, state_dir: Path, clock_skew: float) -> None:
    """``save`` at stop, logged; a failure is reported (the agent still stops)."""
    path = path_in(state_dir)
    try:
        ids, answers = save(guard, responses, path, time.time() - clock_skew)
    except OSError as exc:
        _log.warning("replay memory not saved; a restart forgets the requests accepted", error=str(exc))
        return
    except Exception:  # a fault of ours must not keep the agent from stopping
        _log.exception("replay memory not saved; a restart forgets the requests accepted")
        return
    _log.info("replay memory saved", ids=ids, responses=answers, path=str(path))
