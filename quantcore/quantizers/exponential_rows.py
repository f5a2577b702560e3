"""The exponential quantizer's design fitted to many samples at once, and its measured MSE
(the ``mse`` support of ``method: "log"``, one sample a channel and a candidate threshold).

``exponential.design_exponential`` fits one sample in ~9 ms: a histogram, then up to
``_MAX_ITER`` rounds of partition and a bounded Brent search of ``q``, ~16 Python-level
evaluations each. The per-channel ``mse`` search designs ~60 times a channel, one channel
at a time: 0.3 s a channel, 20 minutes for a layer of 4096. ``positive_levels`` runs the same
steps for every sample of a batch in lockstep: the histograms in a few NumPy passes, the
partitions and the cells' sums compiled (``exponential_kernels``), every search's next point
measured in one batch (``BrentRows``). Bit for bit the one-sample design: elementwise NumPy
calls on rows are the same routines per element, ``np.vecdot`` of rows is the BLAS dot that
``np.dot`` calls, ``q = exp(log q)`` goes through ``math.exp`` (libm's, not NumPy's SIMD
``exp``), and the kernels add and compare in NumPy's order. A sample whose bin centres do not
ascend (the cells would not be runs of bins) is designed alone by the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcore.design.brent_rows import BrentRows
from quantcore.quantizers import exponential as ex
from quantcore.quantizers.base import gain_of
from quantcore.quantizers.exponential_kernels import (
    bin_runs,
    log_errors,
    magnitudes,
    partition,
    rho_give,
    rho_points,
)
from quantcore.spec import QuantizerSpec

# Histograms of this many weights per NumPy pass (float64 temporaries of 8 MiB each).
_HISTOGRAM_WEIGHTS = 1 << 20
# Designs measured together: samples of at most this many weights in all, and at most this
# many cells (levels) in all, so the batch's arrays stay near 100 MiB.
_BATCH_WEIGHTS = 1 << 23
_BATCH_CELLS = 1 << 21


@dataclass(frozen=True, kw_only=True)
class _Bins:
    """Every sample's non-empty histogram bins, one run after another (``offsets``)."""

    centre: npt.NDArray[np.float64]
    mass: npt.NDArray[np.float64]
    first: npt.NDArray[np.float64]
    offsets: npt.NDArray[np.int64]
    informed: npt.NDArray[np.bool_]  # some magnitude is above 0
    ordered: npt.NDArray[np.bool_]  # its bins' centres ascend


def _bins(rows: np.ndarray, pick: np.ndarray, xmax: np.ndarray) -> _Bins:
    """``exponential._histogram`` of each sample ``float64(rows[pick[k]]) / xmax[k]``."""
    n = rows.shape[1]
    per_pass = max(1, _HISTOGRAM_WEIGHTS // max(n, 1))
    width = min(n, ex._BINS + 1)
    centre, mass, first = [], [], []
    counts = np.zeros(pick.size, np.int64)
    top = np.zeros(pick.size)
    ordered = np.zeros(pick.size, bool)
    for lo in range(0, pick.size, per_pass):
        part = slice(lo, lo + per_pass)
        size = pick[part].size
        magnitude = np.empty((size, n))
        magnitudes(rows, pick[part], xmax[part], magnitude)
        top[part] = magnitude.max(axis=1)
        ratio = magnitude / np.where(top[part] > 0, top[part], 1.0)[:, None]
        with np.errstate(divide="ignore"):
            np.log2(ratio, out=ratio)
        runs = np.empty((3, size * width))
        bin_runs(ratio, magnitude, ex._BIN_SLOPE, float(ex._BINS), runs[0], runs[1], runs[2],
                 counts[part], ordered[part])  # fmt: skip
        used = int(counts[part].sum())
        centre.append(runs[0, :used])
        mass.append(runs[1, :used])
        first.append(runs[2, :used])
    offsets = np.zeros(pick.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _Bins(centre=np.concatenate(centre), mass=np.concatenate(mass),
                 first=np.concatenate(first), offsets=offsets, informed=top > 0,
                 ordered=ordered)  # fmt: skip


def _fit(cell_mass: np.ndarray, cell_first: np.ndarray, upper: float) -> np.ndarray:
    """``exponential._fit_levels`` of every row's cells: each row's levels ``a·q^k``. A
    round of the searches is two compiled calls around NumPy's ``exp`` and two BLAS dots."""
    rows, count = cell_mass.shape
    k = np.arange(count, dtype=np.float64)
    searches = BrentRows(np.full(rows, ex._LOG_Q_LOWER), np.full(rows, upper),
                         np.full(rows, ex._LOG_Q_XATOL))  # fmt: skip
    which = np.empty(rows, np.int64)
    power, first, mass = (np.empty((rows, count)) for _ in range(3))
    values = np.empty(rows)
    state, phase, num = searches.state, searches.phase, searches.num
    while w := rho_points(state, phase, k, cell_first, cell_mass, which, power, first, mass):
        p = power[:w]
        np.exp(p, out=p)
        first_dot = np.vecdot(first[:w], p)
        np.multiply(p, p, out=p)
        rho_give(state, phase, num, which[:w], first_dot, np.vecdot(mass[:w], p), values[:w])
    log_q, _ = searches.best()
    q = np.array([math.exp(v) for v in log_q.tolist()])
    power = q[:, None] ** k
    a = np.vecdot(cell_first, power) / np.vecdot(cell_mass, power * power)
    return a[:, None] * power


def positive_levels(
    rows: np.ndarray, pick: np.ndarray, xmax: np.ndarray, count: int
) -> npt.NDArray[np.float64]:
    """The ``count`` positive levels (ascending) that ``design_exponential`` fits to each
    sample ``float64(rows[pick[k]]) / xmax[k]`` (weights in units of xmax), ``count`` ≥ 2."""
    bins = _bins(rows, pick, xmax)
    start = ex._start_levels(count)
    levels = np.repeat(start[None, :], pick.size, axis=0)
    for r in np.flatnonzero(bins.informed & ~bins.ordered):
        sample = rows[pick[r]].astype(np.float64) / xmax[r]
        levels[r] = ex._design_levels(np.abs(sample), count).levels
    active = np.flatnonzero(bins.informed & bins.ordered)
    levels[active] = start * bins.centre[bins.offsets[active + 1] - 1][:, None] * 2.0
    upper = ex._log_q_upper(count)
    splits = np.zeros((pick.size, count - 1), np.int64)
    cell_mass, cell_first = np.zeros((pick.size, count)), np.zeros((pick.size, count))
    for iteration in range(ex._MAX_ITER):
        current = levels[active]
        moved = np.empty(active.size, bool)
        partition(bins.centre, bins.mass, bins.first, bins.offsets, active,
                  0.5 * (current[:, 1:] + current[:, :-1]), iteration == 0, splits, cell_mass,
                  cell_first, moved)  # fmt: skip
        active = active[moved]  # a partition that repeats ends that sample's ascent
        if active.size == 0:
            break
        levels[active] = _fit(cell_mass[active], cell_first[active], upper)
    return levels


class LogSampleErrors:
    """Measured MSE of the exponential ``spec`` (2 bits or more) on rows of ``rows``
    (float32, rows × n) at given thresholds, each sample designed for its own threshold, as
    ``quantize`` does it: ``SampleErrors``' answer for the family that ``SampleErrors``
    cannot measure."""

    def __init__(self, spec: QuantizerSpec, rows: np.ndarray) -> None:
        self.rows = np.ascontiguousarray(rows, np.float32)
        self.count = 1 << (spec.resolved().bits - 1)
        n = max(self.rows.shape[1], 1)
        self.batch = max(1, min(_BATCH_WEIGHTS // n, _BATCH_CELLS // self.count))

    def __call__(self, xmax: npt.ArrayLike, pick: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The MSE of rows ``pick`` at thresholds ``xmax`` (one each)."""
        pick_arr = np.asarray(pick, np.int64).reshape(-1)
        xmax_arr = np.asarray(xmax, np.float64).reshape(-1)
        out = np.empty(pick_arr.size)
        for lo in range(0, pick_arr.size, self.batch):
            part = slice(lo, lo + self.batch)
            out[part] = self._measure(xmax_arr[part], pick_arr[part])
        return out

    def _measure(self, xmax: np.ndarray, pick: np.ndarray) -> np.ndarray:
        positive = positive_levels(self.rows, pick, xmax, self.count)
        bounds = 0.5 * (positive[:, 1:] + positive[:, :-1])
        levels = np.concatenate([-positive[:, ::-1], positive], axis=1).astype(np.float32)
        gain = gain_of(xmax, np.float32).astype(np.float32)  # the design's unit is xmax
        err = np.empty((pick.size, self.rows.shape[1]))
        log_errors(self.rows, pick, gain, xmax.astype(np.float32), bounds, levels, err)
        return np.vecdot(err, err) / self.rows.shape[1]
