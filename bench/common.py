"""Shared helpers for the benchmarks: percentiles, a result line, and peak memory."""

from __future__ import annotations

import atexit
import json
import resource
import shutil
import statistics
import sys
import tempfile
from typing import Any


def agent_state() -> str:
    """A state folder of its own for a benchmark's agent (removed at exit): its replay memory, saved when it
    stops, must not be restored by the next run's agent."""
    folder = tempfile.mkdtemp(prefix="cloudprov-bench-agent-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(samples: list[float]) -> dict[str, float]:
    """p50/p99/mean of latencies given in seconds, in milliseconds."""
    return {
        "p50_ms": round(percentile(samples, 0.50) * 1000, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples) * 1000, 3) if samples else float("nan"),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def result(name: str, **fields: Any) -> None:
    """One machine-readable result line on stdout (``RESULT name {json}``) plus a readable one on stderr."""
    print(f"RESULT {name} {json.dumps(fields, sort_keys=True)}")
    readable = ", ".join(f"{k}={v}" for k, v in fields.items())
    print(f"{name}: {readable}", file=sys.stderr)
