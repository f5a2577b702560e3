"""The factors GPTQ rounds with (``quantcore.compress.gptq``): ``U`` with ``H⁻¹ = UᵀU`` for
a layer's damped input Hessian ``H`` per group, or for each of its diagonal blocks alone.

Every factor is computed with BLAS on one thread (the job's setting, ``quantcore.jobs.run``,
and SciPy's LAPACK's own, ``load_lapack``): a Cholesky factor or a triangular inverse comes
out in other bits on another number of threads, and the codes GPTQ rounds with them would
depend on the machine's core count.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from quantcore.compress.hessian import LayerStats
from quantcore.extensions import extension_file, load_alone

RETRIES = 3  # dampings tried, each ten times the last, before a Hessian counts as singular
LAPACK_MIN_K = 256  # inputs per output from which ``_upper_factor_of_inverse`` uses LAPACK


def _factor(hessian: np.ndarray, count: int, damp: float) -> np.ndarray | None:
    """``U`` with ``H⁻¹ = UᵀU`` per group (damped), or None if no damping makes ``H`` PD."""
    h = hessian.astype(np.float64, copy=True) / max(count, 1)
    idx = np.arange(h.shape[-1])
    diag = h[:, idx, idx]
    dead = diag <= 0
    h[:, idx, idx] = np.where(dead, 1.0, diag)
    scale = np.maximum(np.mean(np.where(dead, 0.0, diag), axis=1), 1e-12)
    for _ in range(RETRIES):
        damped = h.copy()
        damped[:, idx, idx] += damp * scale[:, None]
        try:
            return _upper_factor_of_inverse(damped)
        except np.linalg.LinAlgError:
            damp *= 10.0
    return None


def _upper_factor_of_inverse(h: np.ndarray) -> np.ndarray:
    """Upper triangular ``U`` with ``h⁻¹ = UᵀU`` per group; ``LinAlgError`` if ``h`` is not
    positive definite. With ``P`` the reversal of the axes, ``P·h·P = M·Mᵀ`` (``M`` lower,
    Cholesky) gives ``U = P·M⁻¹·P``: a factorization and a triangular inverse, a third of
    the work of inverting ``h`` and factoring the inverse (nudenet's GPTQ spent 3.5 of its
    4.1 CPU-s there). Below ``LAPACK_MIN_K`` the plain route is kept (chosen when importing
    SciPy's LAPACK cost 0.085 s, and kept since: another route gives other codes)."""
    if h.shape[-1] < LAPACK_MIN_K:
        lower = np.linalg.cholesky(np.linalg.inv(h))
        return np.ascontiguousarray(lower.transpose(0, 2, 1))
    lapack = lapack_module()
    out = np.empty_like(h)
    for g in range(h.shape[0]):
        m = np.linalg.cholesky(h[g, ::-1, ::-1])
        inverse, info = lapack.dtrtri(m, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"singular Cholesky factor (dtrtri info {info})")
        out[g] = inverse[::-1, ::-1]
    return out


@functools.cache
def lapack_module() -> Any:
    """SciPy's LAPACK (lazy: only calibrations with wide layers need it): its compiled module
    ``scipy.linalg._flapack`` loaded alone, 0.01 s, where importing ``scipy.linalg`` took
    0.15-0.25 s (an AVX2 EPYC), half of it NumPy's ``f2py``, ``ma`` and ``testing``, which
    SciPy's array API layer imports by cloning NumPy's namespace. The same functions as
    ``scipy.linalg.lapack``'s (an extension module is initialised once a process); that
    import where the module cannot be found or loaded alone."""
    name = "scipy.linalg._flapack"
    if name in sys.modules:
        return sys.modules[name]
    file = extension_file(*name.split("."))
    try:
        if file is not None:
            return load_alone(name, file, keep=False)
    except Exception:
        pass
    from scipy.linalg import lapack  # another layout of SciPy: its public import

    return lapack


def load_lapack(stats: Iterable[LayerStats]) -> bool:
    """Load SciPy's LAPACK, and put its BLAS on one thread, where GPTQ on ``stats`` will
    factor with it (a layer of ``LAPACK_MIN_K`` inputs or more, its whole ``H``); whether it
    did. Called on the job's own thread: SciPy's OpenBLAS loads after the job put the BLAS
    loaded before it on one thread, its triangular inverse comes out in other bits on
    another number of threads, and OpenBLAS ignored a count set from the quantizer's
    threads, where the factors are computed."""
    if not any(s.geometry.k >= LAPACK_MIN_K and not s.block for s in stats):
        return False
    lapack_module()
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # kept: the job's setting restores NumPy's
    return True


def _block_factor(stats: LayerStats, damp: float, block_size: int) -> np.ndarray | None:
    """``_factor`` of each diagonal block of ``H`` (the quantizer's blocks) alone, (groups,
    blocks, B, B), the last zero past ``k``: each block's error spreads over its own later
    columns only (``k·B²`` work and ``k·B`` memory, not ``k³`` and ``k²``)."""
    g = stats.geometry
    u = np.zeros((g.groups, -(-g.k // block_size), block_size, block_size))
    for index, lo in enumerate(range(0, g.k, block_size)):
        hi = min(lo + block_size, g.k)
        part = _factor(stats.diagonal(lo, hi), stats.count, damp)
        if part is None:
            return None
        u[:, index, : hi - lo, : hi - lo] = part
    return u
