"""numba's BLAS probe without SciPy's ``linalg`` package.

The first numba function a process calls (or loads from the cache) sets up numba's target,
which checks for BLAS by importing ``scipy.linalg.cython_blas``: that import runs
``scipy.linalg``'s ``__init__`` first, 0.15 CPU-s of every quantize process, though no kernel
here calls BLAS. ``load`` imports that one extension module from its file and registers it
under its own name, so the probe finds it; ``scipy.linalg``, when something imports it later,
runs as usual and takes the same module. Without SciPy, or where the file is not found,
nothing is done and numba probes as it always does. ``quantize_model`` calls it before its
first kernel (loading the extension costs 0.03 s, which importing the kernels does not pay).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

NAME = "scipy.linalg.cython_blas"


def load() -> None:
    if NAME in sys.modules or "scipy.linalg" in sys.modules:
        return
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(next(iter(spec.submodule_search_locations))) / "linalg"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"cython_blas{suffix}"
        if path.is_file():
            break
    else:
        return
    found = importlib.util.spec_from_file_location(NAME, path)
    if found is None or found.loader is None:
        return
    module = importlib.util.module_from_spec(found)
    sys.modules[NAME] = module
    try:
        found.loader.exec_module(module)
    except Exception:  # left to numba's own import, which says what is wrong
        del sys.modules[NAME]
