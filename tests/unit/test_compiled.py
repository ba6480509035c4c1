"""The modules pyproject.toml lists as compiled run compiled (setup.py, mypyc), and from their current source:
a compiled module left from an older source would shadow every edit made since."""

from __future__ import annotations

import importlib
import os
import tomllib
from pathlib import Path

import pytest

import protocol

ROOT = Path(__file__).resolve().parents[2]
MODULES: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cloudprov"]["compiled"]

pytestmark = pytest.mark.skipif(
    os.environ.get("CLOUDPROV_COMPILE") == "0", reason="installed as plain Python (CLOUDPROV_COMPILE=0)"
)


@pytest.mark.parametrize("name", MODULES)
def test_each_listed_module_runs_compiled_from_its_current_source(name: str) -> None:
    module = importlib.import_module(name)
    built = Path(module.__file__ or "")
    source = ROOT / (name.replace(".", "/") + ".py")
    assert built.suffix == ".so", f"{name} runs as plain Python: run scripts/setup.sh to compile it"
    assert built.stat().st_mtime >= source.stat().st_mtime, f"{built.name} is older than {source}: run scripts/setup.sh"


def test_the_install_reports_itself_compiled() -> None:
    assert protocol.compiled()
