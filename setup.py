"""Build hook: the modules named in pyproject.toml's ``[tool.cloudprov] compiled`` are compiled to C with
mypyc as cloudprov is installed; the same source runs its request path with about a quarter less CPU
(README, "Compiled modules"). ``CLOUDPROV_COMPILE=0`` installs plain Python.

mypyc keeps its type-check cache under ``build/`` (not in the ``.mypy_cache`` that ``mypy`` runs change).
Its incremental mode sometimes fails inside mypyc after a source change (``emit_undefined_attr_check``);
the build then starts again from an empty cache. The C it writes is compiled again only where it
changed.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
CACHE = HERE / "build" / "mypyc-cache"


def compiled_modules() -> list[str]:
    with (HERE / "pyproject.toml").open("rb") as file:
        return list(tomllib.load(file)["tool"]["cloudprov"]["compiled"])


def extensions() -> list[object]:
    if os.environ.get("CLOUDPROV_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    os.environ["MYPY_CACHE_DIR"] = str(CACHE)
    paths = [module.replace(".", "/") + ".py" for module in compiled_modules()]
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
