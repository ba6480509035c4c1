"""The modules pyproject.toml lists as compiled run compiled (setup.py, mypyc), and from their current source:
a compiled module left from an older source would shadow every edit made since."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import protocol

ROOT = Path(__file__).resolve().parents[2]
MODULES: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cloudprov"]["compiled"]


def _plain() -> bool:
    """Installed as plain Python on purpose (CLOUDPROV_COMPILE=0), or by a setup that found no C compiler
    (nothing compiled at all); in CI the request path must run compiled."""
    if os.environ.get("CLOUDPROV_COMPILE") == "0":
        return True
    nothing_compiled = not any((ROOT / name.replace(".", "/")).parent.glob("*.so") for name in MODULES)
    return nothing_compiled and os.environ.get("CI", "").lower() not in {"1", "true"}


pytestmark = pytest.mark.skipif(_plain(), reason="installed as plain Python (CLOUDPROV_COMPILE=0 or no C compiler)")


@pytest.mark.parametrize("name", MODULES)
def test_each_listed_module_runs_compiled_from_its_current_source(name: str) -> None:
    module = importlib.import_module(name)
    built = Path(module.__file__ or "")
    source = ROOT / (name.replace(".", "/") + ".py")
    assert built.suffix == ".so", f"{name} runs as plain Python: run scripts/setup.sh to compile it"
    assert built.stat().st_mtime >= source.stat().st_mtime, f"{built.name} is older than {source}: run scripts/setup.sh"


def test_the_install_reports_itself_compiled() -> None:
    assert protocol.compiled()


def test_bench_plain_loads_the_source_of_compiled_modules() -> None:
    """``bench.plain.use()`` makes a process load cloudprov from source (``bench.agent_stages`` wraps functions),
    and refuses once a module was loaded compiled."""
    script = (
        "from bench import plain\n"
        "plain.use()\n"
        "import protocol.envelope, transports.local\n"
        "print(protocol.envelope.__file__, transports.local.__file__)\n"
    )
    shown = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert [Path(path).suffix for path in shown.stdout.split()] == [".py", ".py"]
    late = "import protocol.envelope\nfrom bench import plain\nplain.use()\n"
    refused = subprocess.run([sys.executable, "-c", late], cwd=ROOT, capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert "came too late: protocol.envelope" in refused.stderr
