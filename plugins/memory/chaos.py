"""Latency and fault injection for the memory directory: one call per simulated round trip.

Settings: ``MemorySettings.latency`` and ``MemorySettings.faults`` (rates, timeout, seed). The sleep
function is injected, so tests observe the delays without waiting for them.

Guarantees: one random draw decides each round trip's fault (error, disconnect, timeout or none) and
delays draw from the same seeded generator, so a seed gives a repeatable run. A fault is raised
before the operation touches the data: a failed write never half-happens. After a disconnect the
"connection" is closed; the next round trip reopens it (counted in ``stats.reconnects``).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from plugins.directory import DirectoryTimeoutError, UnavailableError
from plugins.memory.latency import FixedLatency
from plugins.memory.settings import FaultSettings, MemorySettings

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class ChaosStats:
    """Counters a load test can print: round trips, injected failures by kind, reconnects."""

    round_trips: int = 0
    errors: int = 0
    disconnects: int = 0
    timeouts: int = 0
    reconnects: int = 0


class Chaos:
    """Decides, per round trip, how long it takes and whether it fails."""

    def __init__(self, settings: MemorySettings, sleep: Sleep) -> None:
        self._latency = settings.latency
        self._faults: FaultSettings = settings.faults
        self._rng = random.Random(f"{settings.faults.seed}:chaos")
        self._sleep = sleep
        self._quiet = isinstance(self._latency, FixedLatency) and self._latency.seconds == 0
        self._faulty = settings.faults.error_rate + settings.faults.disconnect_rate + settings.faults.timeout_rate > 0
        self.connected = True
        self.stats = ChaosStats()

    async def round_trip(self, operation: str) -> None:
        """Wait the simulated latency of ``operation``, then maybe fail it."""
        self.stats.round_trips += 1
        if not self.connected:
            self.connected = True
            self.stats.reconnects += 1
        if not self._quiet:
            await self._sleep(self._latency.sample(self._rng))
        if not self._faulty:
            return
        faults, roll = self._faults, self._rng.random()
        if roll < faults.error_rate:
            self.stats.errors += 1
            raise UnavailableError(f"injected failure during {operation} (memory directory fault injection)")
        roll -= faults.error_rate
        if roll < faults.disconnect_rate:
            self.stats.disconnects += 1
            self.connected = False
            raise UnavailableError(f"injected disconnect during {operation} (memory directory fault injection)")
        roll -= faults.disconnect_rate
        if roll < faults.timeout_rate:
            self.stats.timeouts += 1
            await self._sleep(faults.timeout_seconds)
            raise DirectoryTimeoutError(
                f"injected timeout after {faults.timeout_seconds}s during {operation} (fault injection)"
            )
