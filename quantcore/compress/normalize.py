"""Statistics and normalisation of weights (seed 001 Algorithm 1, steps 2-6).

``normalize=True``: ``x = (w - mean)/std`` with mean and std (population) over the group,
so the quantizer sees zero mean and unit variance. ``normalize=False``: the weights keep their
centre at 0 and are only scaled by their RMS, ``x = w / sqrt(mean(w²))``, so that support
thresholds stay in comparable units while zero stays zero. Denormalisation is folded into the
decoder (``quantcore.quantizers.stream``).

A group is a tensor (granularity ``layer``), all tensors sharing one quantizer (``model``,
statistics merged) or one output channel (``channel``, vectorised over blocks of channels).

Degenerate cases: a constant tensor or channel has scale 0 (every weight decodes to the
centre); an empty tensor, one holding NaN or Inf, a non-float dtype or float64 values outside
the float32 range raise ``InvalidTensorError`` naming the tensor and the number of bad values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import numpy.typing as npt

from quantcore.errors import InvalidTensorError
from quantcore.quantizers.kernel_args import read_only
from quantcore.quantizers.stats import Moments, chunk_moments

FloatArray = npt.NDArray[np.float64]
CHUNK = 1 << 18
FLOAT_DTYPES = frozenset(
    np.dtype(t) for t in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16)
)
_F32_MAX = float(np.finfo(np.float32).max)
# The per-channel moments run compiled (``moment_kernels``); False runs the NumPy reference.
USE_KERNELS = True
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True, kw_only=True)
class Normalization:
    """``x = (w - centre)/scale``; scalars, or one value per channel."""

    centre: float | FloatArray
    scale: float | FloatArray


@dataclass(frozen=True, kw_only=True)
class ChannelMoments:
    """Per-channel count (same for all), mean, m2 (Σ squared deviations), min and max."""

    count: int
    mean: FloatArray
    m2: FloatArray
    minimum: FloatArray
    maximum: FloatArray

    def total(self) -> Moments:
        """The whole tensor's moments, merged from the channels (Chan's update, vectorised)."""
        channels = self.mean.size
        n = self.count * channels
        if n == 0:
            return Moments()
        mean = float(self.mean.mean())
        m2 = float(self.m2.sum() + self.count * np.square(self.mean - mean).sum())
        return Moments(
            count=n, mean=mean, m2=m2, minimum=float(self.minimum.min()),
            maximum=float(self.maximum.max()),
        )  # fmt: skip


def check_tensor(name: str, weights: np.ndarray) -> None:
    """Refuse what cannot be quantized before any work: non-float dtypes and empty tensors."""
    if weights.dtype not in FLOAT_DTYPES:
        raise InvalidTensorError(
            f"tensor {name!r} has dtype {weights.dtype}; only float16, bfloat16, float32 and "
            "float64 weights can be quantized",
            details={"name": name, "dtype": str(weights.dtype)},
        )
    if weights.size == 0:
        raise InvalidTensorError(
            f"tensor {name!r} is empty (shape {weights.shape})",
            details={"name": name, "shape": list(weights.shape)},
        )


def _raise_bad(name: str, weights: np.ndarray) -> None:
    """Count the NaN/Inf (and float64 values beyond float32) and raise naming them."""
    flat = weights.reshape(-1)
    bad = 0
    huge = 0
    for lo in range(0, flat.size, CHUNK):
        chunk = np.asarray(flat[lo : lo + CHUNK], np.float64)
        finite = np.isfinite(chunk)
        bad += int(chunk.size - np.count_nonzero(finite))
        huge += int(np.count_nonzero(np.abs(chunk[finite]) > _F32_MAX))
    if bad:
        raise InvalidTensorError(
            f"tensor {name!r} has {bad} NaN or Inf value(s) out of {flat.size}",
            details={"name": name, "bad_values": bad},
        )
    if huge:
        raise InvalidTensorError(
            f"tensor {name!r} has {huge} value(s) beyond the float32 range (±{_F32_MAX:.4g}); "
            "quantized weights are float32",
            details={"name": name, "bad_values": huge},
        )


def _compute_dtype(weights: np.ndarray) -> np.dtype:
    return np.dtype(np.float64 if weights.dtype == np.float64 else np.float32)


def tensor_moments(name: str, weights: np.ndarray) -> Moments:
    """Moments of a whole tensor, chunk by chunk; validates it (see the module docstring)."""
    check_tensor(name, weights)
    flat = weights.reshape(-1)
    compute = _compute_dtype(weights)
    scratch = np.empty(min(CHUNK, flat.size), compute)
    total = Moments()
    for lo in range(0, flat.size, CHUNK):
        chunk = np.asarray(flat[lo : lo + CHUNK], compute)
        part = chunk_moments(chunk, scratch)
        if not (math.isfinite(part.m2) and math.isfinite(part.mean)):
            if not np.isfinite(chunk).all():
                _raise_bad(name, weights)
            # Finite float32 weights whose squares overflow: redo this chunk in float64.
            part = chunk_moments(chunk.astype(np.float64))
        total = total.merge(part)
    if max(abs(total.minimum), abs(total.maximum)) > _F32_MAX:
        _raise_bad(name, weights)
    return total


def channel_moments(name: str, weights: np.ndarray, axis: int) -> ChannelMoments:
    """Moments per slice along ``axis`` (float64, blocks of whole channels); validates."""
    check_tensor(name, weights)
    view = np.moveaxis(weights, axis, 0)
    channels = view.shape[0]
    per = view[0].size if channels else 0
    if per == 0:
        raise InvalidTensorError(f"tensor {name!r} is empty (shape {weights.shape})")
    mean = np.empty(channels)
    m2 = np.empty(channels)
    lo_v = np.empty(channels)
    hi_v = np.empty(channels)
    if per > CHUNK:
        # Few, large channels: chunk within each channel instead of holding it in float64.
        for c in range(channels):
            m = tensor_moments(name, view[c])
            mean[c], m2[c], lo_v[c], hi_v[c] = m.mean, m.m2, m.minimum, m.maximum
        return ChannelMoments(count=per, mean=mean, m2=m2, minimum=lo_v, maximum=hi_v)
    kernel = _row_moments_kernel() if weights.dtype in _KERNEL_DTYPES else None
    block = max(1, CHUNK // per)
    first = 0
    if kernel is not None and block > 1 and view.ndim == 2:
        first = _side_by_side_at_once(kernel, view, block, (mean, m2, lo_v, hi_v))
    for lo in range(first, channels, block):
        hi = min(lo + block, channels)
        rows = view[lo:hi].reshape(hi - lo, per)
        out = (mean[lo:hi], m2[lo:hi], lo_v[lo:hi], hi_v[lo:hi])
        if kernel is None or not kernel.run(rows, out):
            _numpy_row_moments(rows, *out)
    constant = lo_v == hi_v
    mean[constant] = lo_v[constant]
    m2[constant] = 0.0
    if not (np.isfinite(m2).all() and np.isfinite(mean).all()) or max(
        float(np.abs(lo_v).max()), float(np.abs(hi_v).max())
    ) > _F32_MAX:
        _raise_bad(name, weights)
    return ChannelMoments(count=per, mean=mean, m2=m2, minimum=lo_v, maximum=hi_v)


def _side_by_side_at_once(
    kernel: _RowKernels, view: np.ndarray, block: int, out: tuple[FloatArray, ...]
) -> int:
    """Where the blocks of channels of a 2-D ``view`` are side by side (a MatMul's output
    channels), their moments in one call over all of them but a last block of one channel,
    which NumPy sums another way; returns the channels done (0: none, not that layout).
    Each channel's sums run in sequence whatever the block's width, so the results are the
    blocks' own; in blocks of ``CHUNK`` weights, 21 channels of 12207 took 4.3 ns a weight
    (a short loop across each row, two rows a page). 2-D only: a view of more axes may not
    reshape without a copy of the whole tensor, which the blocks avoid."""
    channels = view.shape[0]
    done = channels - 1 if channels % block == 1 else channels
    if done < 2 or not _side_by_side(view):
        return 0
    kernel.strided(read_only(view), *out, done)
    return done


def _numpy_row_moments(
    rows: np.ndarray, mean: FloatArray, m2: FloatArray, lo: FloatArray, hi: FloatArray
) -> None:
    """The reference: each row's extremes, mean and Σ squared deviations, in float64."""
    wide = np.asarray(rows, np.float64)
    lo[:] = wide.min(axis=1)
    hi[:] = wide.max(axis=1)
    mean[:] = wide.mean(axis=1)
    dev = wide - mean[:, None]
    m2[:] = np.einsum("ij,ij->i", dev, dev)


@dataclass(frozen=True)
class _RowKernels:
    """The compiled ``_numpy_row_moments``: rows contiguous, and rows side by side."""

    contiguous: Callable[..., None]
    strided: Callable[..., None]

    def run(self, rows: np.ndarray, out: tuple[FloatArray, ...]) -> bool:
        """``_numpy_row_moments(rows, *out)`` compiled, where the layout of ``rows`` is one
        the kernels sum as NumPy does; False (nothing done) for any other layout."""
        if rows.flags.c_contiguous:
            chunk = np.getbufsize() if rows.shape[0] == 1 else 0  # einsum's pieces of a lone row
            self.contiguous(read_only(rows), *out, chunk)
        elif _side_by_side(rows):
            self.strided(read_only(rows), *out, rows.shape[0])
        else:
            return False
        return True


def _side_by_side(rows: np.ndarray) -> bool:
    """Whether NumPy widens ``rows`` to a column-major block (each row's values a row length
    apart), which it sums row by row in sequence."""
    return bool(rows.shape[0] > 1 and rows.shape[1] > 1
                and abs(rows.strides[0]) < abs(rows.strides[1]))  # fmt: skip


def _row_moments_kernel() -> _RowKernels | None:
    """The compiled row moments where ``USE_KERNELS`` and they agree bit for bit with this
    process's NumPy (``moment_kernels``); None otherwise."""
    return _checked_kernel() if USE_KERNELS else None


@functools.cache
def _checked_kernel() -> _RowKernels | None:
    from quantcore.compress import moment_kernels

    kernels = _RowKernels(moment_kernels.row_moments, moment_kernels.strided_row_moments)
    rng = np.random.default_rng(7)
    for dtype in _KERNEL_DTYPES:
        for count, per in ((3, 5), (2, 8), (3, 131), (2, 1000), (2, 9001), (1, 20_001)):
            scale = rng.uniform(1e-3, 1e3)
            side_by_side = (rng.laplace(size=(per, count + 2)) * scale).astype(dtype).T
            # Contiguous rows; rows side by side, a whole block and a part of one (numba
            # compiles for each layout: all are compiled here, by ``quantserve warm``).
            for rows in (
                (rng.laplace(size=(count, per)) * scale).astype(dtype),
                side_by_side,
                side_by_side[: count + 1],
            ):
                ours = tuple(np.empty(rows.shape[0]) for _ in range(4))
                reference = [np.empty(rows.shape[0]) for _ in range(4)]
                if not kernels.run(rows, ours):
                    return None
                _numpy_row_moments(rows, *reference)
                if not all(np.array_equal(a, b) for a, b in zip(ours, reference, strict=True)):
                    return None
    return kernels


def normalization(moments: Moments, *, normalize: bool) -> Normalization:
    """Mean and std (``normalize``), or centre 0 and the RMS; scale 0 for constant data."""
    if normalize:
        return Normalization(centre=moments.mean, scale=moments.std)
    return Normalization(centre=0.0, scale=math.sqrt(moments.mean_square))


def channel_normalization(moments: ChannelMoments, *, normalize: bool) -> Normalization:
    """Per-channel ``normalization``."""
    variance = moments.m2 / moments.count
    if normalize:
        return Normalization(centre=moments.mean.copy(), scale=np.sqrt(variance))
    rms = np.sqrt(variance + np.square(moments.mean))
    return Normalization(centre=np.zeros_like(moments.mean), scale=rms)


def normalized_sample(
    weights: np.ndarray, norm: Normalization, moments: Moments, *, limit: int, seed: int = 0
) -> FloatArray:
    """Normalised weights for the support rules and data-driven designs (float64).

    Every weight when the tensor has at most ``limit``; otherwise ``limit`` weights drawn
    uniformly (with replacement, fixed seed, so results repeat) plus the normalised min and
    max, so that the extreme-based supports (wmax, abs_wmin, max_abs) stay exact; ``limit`` 0
    gives the two extremes only. Scale 0 (constant weights) gives zeros.
    """
    flat = weights.reshape(-1)
    if limit > 0 and flat.size <= limit:
        picked = np.asarray(flat, np.float64)
    else:
        from quantcore.quantizers.kernels import sort_small_range  # numba loads on first use

        rng = np.random.default_rng(seed)
        drawn = rng.integers(0, flat.size, size=limit)
        # The same sorted indices as np.sort, in two linear passes instead of a sort.
        index = sort_small_range(drawn, flat.size) if flat.size <= 1 << 32 else np.sort(drawn)
        picked = np.concatenate(
            [np.asarray(flat[index], np.float64), [moments.minimum, moments.maximum]]
        )
    scale = float(norm.scale)
    if scale == 0.0:
        return np.zeros(picked.size)
    return (picked - float(norm.centre)) / scale


def channel_sample(
    weights: np.ndarray, axis: int, norm: Normalization, moments: ChannelMoments, *,
    limit: int, seed: int = 0,
) -> FloatArray:
    """Per-channel normalised sample, shape ``(channels, k)`` (float64).

    The same ``k ≤ max(limit/channels, 16)`` positions in every channel (all positions when
    they fit), plus each channel's normalised min and max in the last two columns; ``limit``
    0 gives the extremes only. Constant channels give zeros.
    """
    view = np.moveaxis(weights, axis, 0)
    channels = view.shape[0]
    per = view[0].size if channels else 0
    take = min(per, max(limit // max(channels, 1), 16)) if limit else 0
    if take < per:
        index = np.sort(np.random.default_rng(seed).choice(per, size=take, replace=False))
        if view.flags.c_contiguous:  # rows in place: np.take, 1.7x a fancy index's speed
            rows = np.take(view.reshape(channels, per), index, axis=1)
        else:  # index the strided view directly: no copy of the whole tensor
            where = np.unravel_index(index, view.shape[1:])
            at: tuple[slice | np.ndarray, ...] = (slice(None), *where)
            rows = view[at].reshape(channels, take)
        picked = np.empty((channels, take + 2), np.float64)
        picked[:, :take] = rows
        picked[:, take] = moments.minimum
        picked[:, take + 1] = moments.maximum
    else:
        picked = np.array(view, np.float64).reshape(channels, per)
    # (w - centre) / scale, in place; 0 for constant channels.
    centre = np.asarray(norm.centre, np.float64)[:, None]
    scale = np.asarray(norm.scale, np.float64)[:, None]
    picked -= centre
    picked /= np.where(scale > 0, scale, 1.0)
    picked[~(scale[:, 0] > 0)] = 0.0
    return picked
