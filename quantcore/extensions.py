"""Compiled modules of other packages loaded from their files alone, without running their
packages' ``__init__``: SciPy's costs 0.15-0.25 s (its array API layer clones NumPy's
namespace, importing NumPy's ``f2py``, ``ma`` and ``testing``), for the one BLAS module numba
checks for (``quantcore.jit``) and the one LAPACK function GPTQ calls
(``quantcore.compress.gptq_factors``). A compiled module is initialised once a process, so a
later import through its package gives the same functions.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def extension_file(package: str, *path: str) -> Path | None:
    """The file of the compiled module ``package.path...``, found without importing
    ``package``; None where the package is absent or has no such file."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*path[:-1])
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        file = folder / f"{path[-1]}{suffix}"
        if file.is_file():
            return file
    return None


def load_alone(name: str, file: Path, *, keep: bool) -> ModuleType:
    """The compiled module ``name`` loaded from ``file``. ``keep``: left in ``sys.modules``,
    where an import of it (numba's check) finds it; else taken out, so that a later import
    of its package loads it as usual and sets it as the package's attribute."""
    loader = importlib.machinery.ExtensionFileLoader(name, str(file))
    spec = importlib.util.spec_from_file_location(name, file, loader=loader)
    if spec is None:
        raise ImportError(f"cannot load {name} from {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    if not keep:
        del sys.modules[name]
    return module
