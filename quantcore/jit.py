"""numba's ``njit``, with its start-up trimmed: the kernel modules import it from here.

Three changes apply as the first kernel module is imported: numba's on-disk cache is read
without the CPU target's refresh and is never fatal (``quantcore.jit_cache``), its entries
are keyed on the modules a kernel imports as well as its own (``quantcore.jit_stamp``), and
SciPy's BLAS module is loaded alone (below).

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
"""

from __future__ import annotations

import sys

from numba import njit

from quantcore import jit_cache, jit_stamp
from quantcore.extensions import extension_file, load_alone

__all__ = ["njit"]

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
jit_stamp.install()  # before any kernel is decorated: each takes its stamp then
