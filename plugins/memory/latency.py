"""Latency models for the memory directory: how long each simulated round trip takes.

Settings: ``{"kind": "fixed", "seconds": 0.002}`` (a bare number means fixed seconds), ``uniform``
(``low``, ``high``), ``normal`` (``mean``, ``stddev``), ``lognormal`` (``median``, ``sigma``) or
``exponential`` (``mean``). Guarantees: ``sample`` never returns a negative delay and draws only from
the random generator it is given, so a seeded generator gives a repeatable sequence of delays.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _LatencyModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def sample(self, rng: random.Random) -> float:
        raise NotImplementedError


class FixedLatency(_LatencyModel):
    kind: Literal["fixed"] = Field(default="fixed", description="Always the same delay.")
    seconds: float = Field(default=0.0, ge=0, description="Delay of every round trip, in seconds.")

    def sample(self, rng: random.Random) -> float:
        return self.seconds


class UniformLatency(_LatencyModel):
    kind: Literal["uniform"] = Field(default="uniform", description="Uniformly distributed delay.")
    low: float = Field(default=0.0, ge=0, description="Shortest delay, in seconds.")
    high: float = Field(default=0.001, ge=0, description="Longest delay, in seconds.")

    @model_validator(mode="after")
    def _ordered(self) -> UniformLatency:
        if self.low > self.high:
            raise ValueError(f"uniform latency needs low <= high, got low={self.low} high={self.high}")
        return self

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


class NormalLatency(_LatencyModel):
    kind: Literal["normal"] = Field(default="normal", description="Normally distributed delay, clipped at zero.")
    mean: float = Field(default=0.001, ge=0, description="Mean delay, in seconds.")
    stddev: float = Field(default=0.0002, ge=0, description="Standard deviation, in seconds.")

    def sample(self, rng: random.Random) -> float:
        return max(0.0, rng.gauss(self.mean, self.stddev))


class LogNormalLatency(_LatencyModel):
    kind: Literal["lognormal"] = Field(
        default="lognormal", description="Log-normal delay: a long tail, like real servers."
    )
    median: float = Field(default=0.001, gt=0, description="Median delay, in seconds.")
    sigma: float = Field(default=0.5, ge=0, description="Shape: standard deviation of the delay's logarithm.")

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)


class ExponentialLatency(_LatencyModel):
    kind: Literal["exponential"] = Field(default="exponential", description="Exponentially distributed delay.")
    mean: float = Field(default=0.001, gt=0, description="Mean delay, in seconds.")

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)


Latency = Annotated[
    FixedLatency | UniformLatency | NormalLatency | LogNormalLatency | ExponentialLatency,
    Field(discriminator="kind"),
]


def coerce_latency(value: Any) -> Any:
    """Let settings say ``latency: 0.002`` for a fixed delay."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"kind": "fixed", "seconds": value}
    return value
