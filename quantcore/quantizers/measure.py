"""The measured MSE of a quantizer on many samples at once, for the ``mse`` support search.

``SampleErrors(spec, rows)`` answers, for one threshold per row, what ``quantize(row, spec,
xmax)`` followed by ``mean((row - ŵ)²)`` gives, bit for bit: the compiled kernel
(``quantcore.quantizers.kernels.sample_errors``) writes each row's errors, and their sum of
squares is ``np.dot`` of them, as in the one-row measurement (``np.vecdot`` over a batch of
rows: the same BLAS dot per row, called from C). No per-call design, decoder or
tensor is built, so a search over every channel of a tensor costs a few passes over its
sample rather than dozens of ``quantize`` calls per channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from quantcore.quantizers.base import Design, gain_of
from quantcore.quantizers.families import design as design_for
from quantcore.quantizers.kernel_args import kernel_args
from quantcore.spec import Method, QuantizerSpec

if TYPE_CHECKING:
    from quantcore.quantizers.exponential_rows import LogSampleErrors

# Errors of at most _BATCH weights at a time (float64: 2 MiB), so the kernel's output is
# still in cache when the dot reads it back.
_BATCH = 1 << 18


class SampleErrors:
    """Measured MSE of ``spec`` on each row of ``rows`` (float32, rows × n) at given xmax;
    ``fitted``: a design already fitted to the data (the exponential family's), shared by
    every row, instead of the spec's own."""

    def __init__(
        self, spec: QuantizerSpec, rows: np.ndarray, fitted: Design | None = None
    ) -> None:
        self.rows = np.ascontiguousarray(rows, np.float32)
        self.design: Design = fitted or design_for(spec.resolved())
        args = kernel_args(self.design, np.dtype(np.float32))
        assert args is not None
        values = args.values
        self.family = (values[0], values[1], values[2], values[3], *values[5:10])

    @staticmethod
    def supported(spec: QuantizerSpec, fitted: Design | None = None) -> bool:
        """Whether the kernel measures the design: ``fitted``, else the spec's own. Without a
        fitted one, the exponential family fits its design to each sample
        (``LogSampleErrors``)."""
        if fitted is None and spec.method is Method.LOG:
            return False
        chosen = fitted or design_for(spec.resolved())
        return kernel_args(chosen, np.dtype(np.float32)) is not None

    def __call__(self, xmax: npt.ArrayLike, pick: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The MSE of rows ``pick`` at thresholds ``xmax`` (one each)."""
        pick_arr = np.asarray(pick, np.int64).reshape(-1)
        step = np.asarray(xmax, np.float64).reshape(-1) / self.design.support_edge
        gain = gain_of(step, np.float32)
        offset = 0.0 + self.design.half * step if self.design.levels is None else 0.0 * step
        n = self.rows.shape[1]
        batch = max(1, _BATCH // max(n, 1))
        err = np.empty((min(batch, pick_arr.size), n), np.float64)
        codes = np.empty(n, self.design.dtype)
        gain32, step32 = gain.astype(np.float32), step.astype(np.float32)
        offset32 = np.broadcast_to(np.asarray(offset, np.float64), step.shape).astype(np.float32)
        out = np.empty(pick_arr.size)
        from quantcore.quantizers.kernels import sample_errors  # numba loads on first use

        for lo in range(0, pick_arr.size, batch):
            part = slice(lo, lo + batch)
            rows = err[: pick_arr[part].size]
            sample_errors(  # type: ignore[call-arg]
                self.rows, pick_arr[part], gain32[part], step32[part], offset32[part],
                *self.family, codes, rows,
            )  # fmt: skip
            out[part] = np.vecdot(rows, rows) / n
        return out


def measurable(spec: QuantizerSpec, fitted: Design | None = None) -> bool:
    """Whether ``sample_errors`` measures ``spec`` (else each row is searched alone). The
    exponential family at 1 bit is a centroid, with no ascent to batch."""
    if fitted is None and spec.method is Method.LOG:
        return spec.resolved().bits >= 2
    return SampleErrors.supported(spec, fitted)


def sample_errors(
    spec: QuantizerSpec, rows: np.ndarray, fitted: Design | None = None
) -> SampleErrors | LogSampleErrors:
    """The batched measurement of ``spec`` on ``rows`` (``measurable(spec, fitted)``): with
    ``fitted``, every row measured with that one design."""
    if fitted is not None:
        return SampleErrors(spec, rows, fitted)
    if spec.method is Method.LOG:
        # numba (and the batched fit) load with the first such search, not on import
        from quantcore.quantizers.exponential_rows import LogSampleErrors

        return LogSampleErrors(spec, rows)
    return SampleErrors(spec, rows)
