"""Run cloudprov's own modules as plain Python in this process, whether compiled modules are installed or not.

A bench that times a path by wrapping its functions (``bench.agent_stages``) needs calls that look the
function up where it is wrapped; compiled code (mypyc, ``setup.py``) calls its own functions directly.
``use()`` puts a finder first on ``sys.meta_path`` that loads the ``.py`` source of any cloudprov module
a compiled one would shadow. Call it before anything imports cloudprov; the figures are then plain
Python's.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from types import ModuleType

_PACKAGES = frozenset({"agent", "cli", "plugins", "protocol", "service", "transports"})


class _Source(MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] not in _PACKAGES:
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or spec.origin.endswith(".py"):
            return spec
        source = Path(spec.origin).with_name(fullname.rpartition(".")[2] + ".py")
        return importlib.util.spec_from_file_location(fullname, source) if source.is_file() else spec


def use() -> None:
    """Load cloudprov's modules from source from now on (refused once one is loaded compiled)."""
    loaded = [name for name in sys.modules if name.partition(".")[0] in _PACKAGES]
    compiled = [name for name in loaded if not (getattr(sys.modules[name], "__file__", "") or ".py").endswith(".py")]
    if compiled:
        raise RuntimeError(f"bench.plain.use() came too late: {', '.join(compiled)} already loaded compiled")
    if not any(isinstance(finder, _Source) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Source())
