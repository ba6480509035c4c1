"""Build hook: the modules named in pyproject.toml's ``[tool.cloudprov] compiled`` are compiled to C with
mypyc as cloudprov is installed; the same source then runs its request path with about a third less CPU
(README, "Compiled modules").

``CLOUDPROV_COMPILE``: ``0`` installs plain Python; ``1`` compiles or fails; unset, cloudprov compiles
when it can and otherwise installs plain Python with a message. Compiling needs a C compiler, mypy
(mypyc) and cloudprov's own dependencies importable by this build, since mypyc type-checks the code
against them: ``scripts/setup.sh`` and the Docker image install those first, then build with
``pip install --no-build-isolation``. An isolated build (``pip install .``) has none of them and
installs plain Python.

mypyc keeps its type-check cache under ``build/`` (not in the ``.mypy_cache`` that ``mypy`` runs change).
Its incremental mode sometimes fails inside mypyc after a source change (``emit_undefined_attr_check``);
the build then starts again from an empty cache. The C it writes is compiled again only where it
changed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
CACHE = HERE / "build" / "mypyc-cache"


def _project() -> dict[str, object]:
    with (HERE / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _missing(project: dict[str, object]) -> list[str]:
    """What this build cannot import that compiling needs: mypy and the stubs it checks yaml with (both
    installed for it by scripts/setup.sh and the Dockerfile), and every dependency of cloudprov."""
    dependencies = project["project"]["dependencies"]  # type: ignore[index]
    names = ["mypy", "types-PyYAML"]
    names += [re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0] for requirement in dependencies]
    missing = []
    for name in names:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def extensions() -> list[object]:
    wanted = os.environ.get("CLOUDPROV_COMPILE", "")
    if wanted == "0":
        return []
    project = _project()
    missing = _missing(project)
    if missing:
        why = f"cannot import {', '.join(missing)} in this build (see setup.py)"
        if wanted == "1":
            raise SystemExit(f"CLOUDPROV_COMPILE=1, but the build {why}")
        print(f"cloudprov: installing plain Python, not compiled: the build {why}", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    os.environ["MYPY_CACHE_DIR"] = str(CACHE)
    modules: list[str] = project["tool"]["cloudprov"]["compiled"]  # type: ignore[index]
    paths = [module.replace(".", "/") + ".py" for module in modules]
    try:
        return list(mypycify(paths, opt_level="3", separate=True))
    except Exception:  # mypyc failing over a stale cache (a type error exits instead), so: once more, afresh
        shutil.rmtree(CACHE, ignore_errors=True)
        return list(mypycify(paths, opt_level="3", separate=True))


class BuildExt(build_ext):
    """``build_ext`` with a C compiler per core, that marks every module it built as built now, compiled
    again or not (C that did not change is not): ``tests/unit/test_compiled.py`` tells a stale compiled
    module by its time."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:  # pip builds with no -j: a C compiler per core
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        super().run()
        for extension in self.extensions:
            built = self.get_ext_fullpath(extension.name)  # in the source tree when built in place (editable)
            if os.path.exists(built):
                os.utime(built)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
