"""CLI progress: a redrawn bar on a terminal, a few structured JSON events otherwise."""

from __future__ import annotations

import io
import json

from cli.progress import Progress


def test_non_tty_progress_is_a_few_json_events() -> None:
    """Off a terminal, 1000 steps produce at most a dozen JSON progress events, ending at done == total."""
    stream = io.StringIO()
    progress = Progress("burst", 1000, stream, tty=False)
    for _ in range(1000):
        progress.advance()
    progress.close()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert 2 <= len(events) <= 12
    assert all(event["event"] == "progress" and event["task"] == "burst" for event in events)
    assert [event["done"] for event in events] == sorted(event["done"] for event in events)
    assert events[-1]["done"] == events[-1]["total"] == 1000


def test_tty_progress_redraws_one_line() -> None:
    """On a terminal the bar is redrawn in place with carriage returns and ends with one newline."""
    stream = io.StringIO()
    progress = Progress("burst", 4, stream, tty=True)
    for _ in range(4):
        progress.advance()
    progress.close()
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("[" + "#" * 30 + "]  4/4\n")


def test_nothing_is_written_after_close() -> None:
    """advance() after close() writes nothing."""
    stream = io.StringIO()
    progress = Progress("x", 2, stream, tty=False)
    progress.close()
    written = stream.getvalue()
    progress.advance()
    progress.close()
    assert stream.getvalue() == written
