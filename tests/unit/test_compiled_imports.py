"""The compiled modules build without the optional extras: mypyc type-checks every module they import, and
``scripts/demo.sh`` installs cloudprov without bonsai, aio-pika, the Service Bus SDK or asyncpg. CI installs
them all, so a compiled module that reached one of them (even through a package's ``__init__``) would pass
CI and fail a user's first command; this reads the import graph instead."""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPILED: list[str] = PROJECT["tool"]["cloudprov"]["compiled"]
OPTIONAL = PROJECT["project"]["optional-dependencies"]
EXTRAS = {name: specs for name, specs in OPTIONAL.items() if name not in {"all", "dev"}}


@cache
def _optional_imports() -> dict[str, str]:
    """Top-level import name -> the extra whose distribution provides it (``bonsai`` -> ``ldap``)."""
    by_distribution: dict[str, str] = {}
    for extra, specs in EXTRAS.items():
        for spec in specs:
            by_distribution[re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower()] = extra
    found: dict[str, str] = {}
    for top, distributions in packages_distributions().items():
        for distribution in distributions:
            extra = by_distribution.get(distribution.lower().replace("_", "-"))
            if extra is not None:
                found[top] = extra
    return found


@cache
def _source(module: str) -> Path | None:
    path = ROOT / module.replace(".", "/")
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imports(module: str, source: Path) -> frozenset[str]:
    """Every module name ``source`` imports, anywhere in it (``TYPE_CHECKING`` blocks and functions too:
    mypy reads them all), with ``from a import b`` also as ``a.b`` (b may be a module)."""
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def _reached(start: str) -> dict[str, str]:
    """For each outside package that the project modules mypy reads for ``start`` import (packages'
    ``__init__`` included), one project module that imports it."""
    seen: set[str] = set()
    outside: dict[str, str] = {}
    todo = [start]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for cut in range(1, len(parts) + 1):  # importing a.b.c reads a and a.b too
            name = ".".join(parts[:cut])
            if name in seen:
                continue
            source = _source(name)
            if source is None:
                continue
            seen.add(name)
            for imported in _imports(name, source):
                if _source(imported) is not None:
                    todo.append(imported)
                else:
                    outside.setdefault(imported.split(".")[0], name)
    return outside


def test_the_optional_packages_are_known() -> None:
    """The extras' distributions are installed here (the test setup installs every extra), so their import
    names are known: without them the check below would find nothing to refuse."""
    assert {"bonsai", "aio_pika", "asyncpg"} <= set(_optional_imports())


@pytest.mark.parametrize("name", COMPILED)
def test_a_compiled_module_reaches_no_optional_dependency(name: str) -> None:
    optional = _optional_imports()
    reached = {top: via for top, via in _reached(name).items() if top in optional}
    named = ", ".join(f"{top} (extra {optional[top]!r}, imported by {via})" for top, via in reached.items())
    assert not reached, (
        f"compiling {name} type-checks {named}: the build fails where that extra is not installed "
        "(scripts/demo.sh installs none)"
    )
