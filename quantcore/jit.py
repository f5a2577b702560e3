"""numba's ``njit`` (and the names the kernels' intrinsics use), with its start-up trimmed: the
kernel modules import them from here, never from numba itself.

Four changes apply as the first kernel module is imported: numba's on-disk cache is read
without the CPU target's refresh and is never fatal (``quantcore.jit_cache``), its entries
are keyed on the modules a kernel imports as well as its own (``quantcore.jit_stamp``), its
runtime is loaded from a cache of its own rather than compiled in every process
(``quantcore.jit_runtime``), and SciPy's BLAS module is loaded alone (below).

Wherever numba imports ``numba.np.arraymath`` (its target's set-up, which a compile still
runs; a cached kernel whose environment names that module), it checks for a BLAS by importing
``scipy.linalg.cython_blas``, and so runs the ``scipy.linalg`` package's ``__init__`` (every
decomposition, ``scipy._lib``'s array API): 0.2 s, in every CLI process and every worker,
though no kernel here calls a BLAS. So the extension module is loaded here under its own name,
without its package's ``__init__``: numba's check finds it in ``sys.modules``, and a kernel
that did call a BLAS would get the same function pointers from it. Every path that runs a
kernel (a quantization, an unpack, the package's decode check) has it; importing the quantize
path loads no kernel module and does not pay the extension's 0.005-0.04 s. Where SciPy is
absent, laid out otherwise or already imported, nothing is done.

Two of numba's optional reads are skipped too (``_import_numba``), 0.03 s of each process that
runs a kernel (0.05 on slower cores): its configuration imports PyYAML only to read a
``.numba_config.yaml`` in the working directory (where there is none, the import is made to
fail while numba loads), and before its first compile or cache load it scans every installed
distribution's entry points for numba extensions, which no kernel here uses.
"""

from __future__ import annotations

import os
import sys

NUMBA_CONFIG_FILE = ".numba_config.yaml"


def _import_numba() -> None:
    """Import numba without PyYAML where there is no config file for it to read, and mark its
    extensions as loaded (module docstring). Nothing is changed where numba is loaded already."""
    if "numba" in sys.modules:
        return
    hide = "yaml" not in sys.modules and not os.path.isfile(NUMBA_CONFIG_FILE)
    if hide:
        sys.modules["yaml"] = None  # type: ignore[assignment]  # an import of it fails
    try:
        import numba  # noqa: F401
    finally:
        if hide and "yaml" in sys.modules and sys.modules["yaml"] is None:
            del sys.modules["yaml"]
    from numba.core import entrypoints

    entrypoints._already_initialized = True


_import_numba()

# After ``_import_numba``, as is every import of numba by the kernel modules: they take its
# names from here, and jit_cache and jit_stamp import it.
from numba import njit, types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from quantcore import jit_cache, jit_runtime, jit_stamp  # noqa: E402
from quantcore.extensions import extension_file, load_alone  # noqa: E402

__all__ = ["cgutils", "intrinsic", "njit", "types"]

BLAS_MODULE = "scipy.linalg.cython_blas"


def preload_blas() -> bool:
    """Load ``scipy.linalg.cython_blas`` alone (module docstring); whether it is loaded now.
    Runs once, as this module is imported (under its import lock)."""
    if BLAS_MODULE in sys.modules or "scipy.linalg" in sys.modules:
        return BLAS_MODULE in sys.modules
    path = extension_file("scipy", "linalg", "cython_blas")
    if path is None:
        return False
    try:
        load_alone(BLAS_MODULE, path, keep=True)
    except Exception:
        return False
    return True


preload_blas()
jit_cache.install()
jit_runtime.install()
jit_stamp.install()  # before any kernel is decorated: each takes its stamp then
