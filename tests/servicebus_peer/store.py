"""Queues of the test peer, optionally made durable by an append-only journal.

Each queue holds records (the message bytes as sent, a sequence number, enqueue time and how often
it was handed out) in three places: ready, locked (by lock token) and deferred. With a data
directory every change is appended to ``journal.jsonl`` and flushed before the peer confirms it, so
a peer killed with SIGKILL and started again on the same directory has lost nothing; locks do not
survive a restart (their links are gone), so locked messages come back as ready.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

DEAD_LETTER_QUEUE = "$deadletterqueue"


@dataclass(eq=False)
class Record:
    seq: int
    queue: str
    raw: bytes
    enqueued: float
    deliveries: int = 0
    token: uuid.UUID | None = None
    locked_until: float = 0.0
    extra_properties: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Queue:
    name: str
    ready: deque[Record] = field(default_factory=deque)
    locked: dict[uuid.UUID, Record] = field(default_factory=dict)
    deferred: dict[uuid.UUID, Record] = field(default_factory=dict)
    consumers: list[Any] = field(default_factory=list)

    def all(self) -> list[Record]:
        return sorted([*self.ready, *self.locked.values(), *self.deferred.values()], key=lambda r: r.seq)


class Store:
    """All queues by (lower-case) name, and the journal that makes them survive a restart."""

    def __init__(self, data_dir: str | None = None) -> None:
        self.queues: dict[str, Queue] = {}
        self.seq = 0
        self._journal: IO[str] | None = None
        if data_dir:
            path = Path(data_dir) / "journal.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                self._replay(path)
            self._compact(path)

    def queue(self, name: str) -> Queue:
        name = name.lower()
        if name not in self.queues:
            self.queues[name] = Queue(name)
        return self.queues[name]

    def enqueue(self, queue: str, raw: bytes, extra: dict[str, Any] | None = None) -> Record:
        self.seq += 1
        rec = Record(self.seq, queue.lower(), raw, time.time(), extra_properties=dict(extra or {}))
        self._write({"op": "add", **self._dump(rec)})
        self.queue(queue).ready.append(rec)
        return rec

    def handed_out(self, rec: Record) -> None:
        rec.deliveries += 1
        self._write({"op": "count", "seq": rec.seq, "n": rec.deliveries})

    def removed(self, rec: Record) -> None:
        self._write({"op": "del", "seq": rec.seq})

    def _dump(self, rec: Record) -> dict[str, Any]:
        return {
            "seq": rec.seq,
            "queue": rec.queue,
            "raw": base64.b64encode(rec.raw).decode(),
            "enqueued": rec.enqueued,
            "n": rec.deliveries,
            "extra": rec.extra_properties,
        }

    def _write(self, entry: dict[str, Any]) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps(entry) + "\n")
            self._journal.flush()

    def _replay(self, path: Path) -> None:
        records: dict[int, Record] = {}
        with path.open() as journal:
            for line in journal:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line: the peer died while writing it
                seq = entry["seq"]
                if entry["op"] == "add":
                    records[seq] = Record(
                        seq,
                        entry["queue"],
                        base64.b64decode(entry["raw"]),
                        entry["enqueued"],
                        entry["n"],
                        extra_properties=entry.get("extra") or {},
                    )
                elif entry["op"] == "count" and seq in records:
                    records[seq].deliveries = entry["n"]
                elif entry["op"] == "del":
                    records.pop(seq, None)
                self.seq = max(self.seq, seq)
        for rec in sorted(records.values(), key=lambda r: r.seq):
            self.queue(rec.queue).ready.append(rec)

    def _compact(self, path: Path) -> None:
        fresh = path.with_suffix(".tmp")
        with fresh.open("w") as out:
            for queue in self.queues.values():
                for rec in queue.all():
                    out.write(json.dumps({"op": "add", **self._dump(rec)}) + "\n")
        fresh.replace(path)
        self._journal = path.open("a")

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
