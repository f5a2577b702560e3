"""What the compiled kernels need to know of a design, in the compute dtype.

Constants are cast to the dtype the NumPy encoders compare and subtract in (a Python float
meeting a float32 array is a float32 there), so the kernels' arithmetic is the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantcore.quantizers.base import Design
from quantcore.quantizers.breakpoints import code_table
from quantcore.quantizers.deadzone import DeadzoneDesign
from quantcore.quantizers.uniform import MidriseDesign, MidtreadDesign

# The encoder families of the kernels (here, not in the kernels' module: numba loads with the
# first quantization, not with this one).
MIDRISE, SIGNED_DEADZONE, DEADZONE_INDEX, TABLE = 0, 1, 2, 3


@dataclass(frozen=True)
class KernelArgs:
    """``encode_one``'s family arguments, then the levels and the count mask, in order."""

    values: tuple[object, ...]


def kernel_args(design: Design, dtype: np.dtype) -> KernelArgs | None:
    """The kernel arguments of ``design`` for ``t`` of ``dtype``; None: NumPy path only."""
    real = np.dtype(dtype).type
    signbit = False
    edges, table, lut = np.zeros(1, dtype), np.zeros(1, np.int64), np.zeros(1, np.int64)
    limit = ratio = real(0.0)
    max_index = 0
    if isinstance(design, MidriseDesign):
        kind, limit = MIDRISE, real(design.code_max)
    elif isinstance(design, MidtreadDesign):
        kind, ratio, max_index = SIGNED_DEADZONE, real(0.5), design.code_max
    elif isinstance(design, DeadzoneDesign):
        kind, ratio, max_index = DEADZONE_INDEX, real(design.ratio), design.max_index
    else:
        found = code_table(design, np.dtype(dtype))
        if found is None:
            return None
        kind, signbit, edges, table, lut = TABLE, found.signbit, found.edges, found.codes, found.lut
    levels = np.zeros(0, np.float32) if design.levels is None else design.levels
    mask = 0xFF if design.dtype.itemsize == 1 else 0xFFFF
    edge = np.float32(design.support_edge)
    return KernelArgs((kind, limit, ratio, max_index, edge, signbit, edges, table, lut,
                       np.ascontiguousarray(levels, np.float32), mask))  # fmt: skip


def read_only(weights: np.ndarray) -> np.ndarray:
    """A read-only view of ``weights``, as the kernels that only read them take them: numba
    compiles a kernel once per mutability of each array argument, and weights arrive both
    ways (read-only from a mapped file, writable from a conversion)."""
    view = weights.view()
    view.flags.writeable = False
    return view
