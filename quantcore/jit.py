"""numba's ``njit``, with its start-up trimmed: the kernel modules import it from here.

Two trims, both applied as the first kernel module is imported.

Loading a kernel from numba's on-disk cache refreshes the whole CPU target first: it imports
and installs every typing and lowering registry (``numba.cpython``, ``numba.np``, the typed
containers...), 0.15-0.2 s and 25-30 MB in every CLI process and worker pool process, though
a cached kernel is machine code that needs only numba's runtime (NRT) to run. So a cache load
here initializes the runtime alone (``trim_cache_loads``); a kernel that is not in the cache
is compiled as before, and compiling refreshes the target itself. Where numba's cache loader
is not the one this was written against, it is left alone.

numba sets up its CPU target at a process's first compiled call (or first load from its
cache). That set-up imports ``numba.np.arraymath``, which checks for a BLAS by importing
``scipy.linalg.cython_blas``, and so runs the ``scipy.linalg`` package's ``__init__`` (every
decomposition, ``scipy._lib``'s array API): 0.2 s of a 0.35-0.5 s set-up, in every CLI process
and every worker, though no kernel here calls a BLAS. So the extension module is loaded here
under its own name, without its package's ``__init__``: numba's check finds it in
``sys.modules``, and a kernel that did call a BLAS would get the same function pointers from
it. This runs as the first kernel module is imported, so every path that runs a kernel (a
quantization, an unpack, the package's decode check) has it; importing the quantize path loads
no kernel module and does not pay the extension's 0.01-0.04 s. Where SciPy is absent, laid out
otherwise or already imported, nothing is done.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

from numba import njit
from numba.core import caching

__all__ = ["njit"]

BLAS_MODULE = "scipy.linalg.cython_blas"


def _blas_extension() -> Path | None:
    """The file of SciPy's ``cython_blas`` extension module, found without importing SciPy."""
    try:
        spec = importlib.util.find_spec("scipy")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "linalg"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"cython_blas{suffix}"
        if path.is_file():
            return path
    return None


def preload_blas() -> bool:
    """Load ``scipy.linalg.cython_blas`` alone (module docstring); whether it is loaded now.
    Runs once, as this module is imported (under its import lock)."""
    if BLAS_MODULE in sys.modules or "scipy.linalg" in sys.modules:
        return BLAS_MODULE in sys.modules
    path = _blas_extension()
    if path is None:
        return False
    loader = importlib.machinery.ExtensionFileLoader(BLAS_MODULE, str(path))
    spec = importlib.util.spec_from_file_location(BLAS_MODULE, path, loader=loader)
    if spec is None:
        return False
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules[BLAS_MODULE] = module
        loader.exec_module(module)
    except Exception:
        sys.modules.pop(BLAS_MODULE, None)
        return False
    return True


# What numba's ``Cache.load_overload`` refers to, in the shape ``trim_cache_loads`` replaces.
_CACHE_LOAD_NAMES = {"refresh", "_guard_against_spurious_io_errors", "_load_overload"}


def _load_with_runtime_only(self: Any, sig: Any, target_context: Any) -> Any:
    """``Cache.load_overload`` without the target's refresh: only the runtime a cached kernel
    calls into (its allocator, reference counts) is set up; ``initialize`` runs once."""
    from numba.core.runtime import rtsys

    rtsys.initialize(target_context)
    with self._guard_against_spurious_io_errors():
        return self._load_overload(sig, target_context)


def trim_cache_loads() -> bool:
    """Make numba's cache loads skip the target's refresh (module docstring); whether they do."""
    load = caching.Cache.load_overload
    if load is _load_with_runtime_only:
        return True
    if set(load.__code__.co_names) != _CACHE_LOAD_NAMES:
        return False
    caching.Cache.load_overload = _load_with_runtime_only  # type: ignore[method-assign]
    return True


preload_blas()
trim_cache_loads()
