"""The ``memory`` directory plugin: an async, in-process LDAP server for demos and load tests.

Not a test double: the same filters, DNs and error outcomes as slapd or Active Directory (``flavor``
picks which operational attributes it keeps), plus seeded sample data, LDIF seeding, injectable
latency and faults, and a bounded change log. Modules: ``settings`` and ``latency`` (configuration),
``store`` (the DIT and its index), ``query`` (a filter's plan against the index), ``operational``
(per-flavor attributes), ``changelog``, ``chaos`` (latency/faults), ``seed`` (sample data), ``ldif``
(RFC 2849 reader/writer), ``directory`` (the ``Directory`` implementation) and ``errors``.
"""

from plugins.memory.directory import MemoryDirectory
from plugins.memory.errors import DirectoryClosedError, ForeignWatermarkError, WatermarkExpiredError
from plugins.memory.latency import (
    ExponentialLatency,
    FixedLatency,
    LogNormalLatency,
    NormalLatency,
    UniformLatency,
)
from plugins.memory.settings import FaultSettings, MemorySettings

__all__ = [
    "DirectoryClosedError",
    "ExponentialLatency",
    "FaultSettings",
    "FixedLatency",
    "ForeignWatermarkError",
    "LogNormalLatency",
    "MemoryDirectory",
    "MemorySettings",
    "NormalLatency",
    "UniformLatency",
    "WatermarkExpiredError",
]
