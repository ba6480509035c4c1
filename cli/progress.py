"""Progress of long CLI work: a bar on a terminal, structured events otherwise.

What it is
    ``Progress(task, total, stream)`` is told ``advance(n)`` as work is done and ``close()`` at the
    end. On a TTY it redraws one line (``burst  [#####.....]  512/1000``); elsewhere (CI, pipes, log
    collectors) it writes JSON lines ``{"event": "progress", "task": …, "done": …, "total": …}`` at
    most every 10 % and once at the end, so a log keeps a handful of lines, not thousands.

Guarantees
    Output goes to the given stream only (stderr by default, so stdout stays the command's result);
    nothing is written after ``close()``.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, task: str, total: int, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.task = task
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._next_event = 0
        self._closed = False
        self._emit()

    def advance(self, count: int = 1) -> None:
        if self._closed:
            return
        self.done = min(self.done + count, self.total)
        self._emit()

    def close(self) -> None:
        if self._closed:
            return
        if self.tty:
            self.stream.write("\n")
        elif self._next_event <= self.total:
            self._event()
        self._closed = True
        self.stream.flush()

    def _emit(self) -> None:
        if self.tty:
            filled = WIDTH * self.done // self.total if self.total else WIDTH
            bar = "#" * filled + "." * (WIDTH - filled)
            self.stream.write(f"\r{self.task}  [{bar}]  {self.done}/{self.total}")
            self.stream.flush()
        elif self.done >= self._next_event:
            self._event()

    def _event(self) -> None:
        record = {"event": "progress", "task": self.task, "done": self.done, "total": self.total}
        self.stream.write(json.dumps(record) + "\n")
        step = max(self.total // 10, 1)
        self._next_event = (self.done // step + 1) * step
        if self.done >= self.total:
            self._next_event = self.total + 1
