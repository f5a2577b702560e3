"""How well standard densities describe a tensor's weights (seed 004, eq. 1-2, tables 2-3).

For each family a density Q is fitted to the weights and compared with the weights'
histogram P on the same bins:

    SSE = sum_i (P(i) - Q(i))**2              (eq. 1)
    KLD = sum_i P(i) * ln(P(i) / max(Q(i), KLD_FLOOR))   (eq. 2, in nats)

Histogram and range policy: P counts *all* weights with ``np.histogram`` on ``bins`` equal
bins over the central range ``[q(0.001), q(0.999)]`` (quantiles of the subsample below), so
that a few outliers do not squeeze the bulk into a handful of bins; weights outside the range
are left out. Q(i) is the fitted distribution's probability of bin i (a difference of its
CDF at the bin edges, exact even where the density is infinite). P and Q are each normalised
to sum 1 over the bins, so both are distributions conditional on the range. Terms with
P(i) = 0 add nothing to the KLD; Q is floored at ``KLD_FLOOR`` (1e-10) inside the logarithm
so that a family with no mass in an occupied bin gets a large but finite divergence.

Estimation runs on a seeded random subsample of ``sample`` weights (without replacement; all
weights if there are fewer), with closed-form estimators, so that 50M weights cost about one
histogram pass:

- laplace: loc = median, scale = mean |w - median| (maximum likelihood)
- gaussian: loc = mean, scale = standard deviation (maximum likelihood)
- logistic: loc = mean, scale = std * sqrt(3) / pi (method of moments)
- cauchy: loc = median, scale = half the interquartile range (exact quantile match)
- uniform: loc = min, scale = max - min over all weights (maximum likelihood)
- gamma, exponential, alpha are one-sided: they are fitted to ``w - min(w)`` (``loc`` is the
  minimum of all weights), so that every family is scored on the same histogram P.
  gamma: shape = mean^2 / var, scale = var / mean (method of moments);
  exponential: scale = mean (maximum likelihood given loc);
  alpha: if X ~ alpha(a, scale) then 1/X ~ Normal(a/scale, 1/scale) (truncated to positive
  values), so scale = 1/s and a = m/s with m the median and s = IQR/1.349 of 1/(w - min).

Degenerate cases: an empty tensor, NaN or Inf, or a constant tensor raise
``InvalidTensorError``. An estimated scale that is not positive (e.g. more than half the
weights are exactly zero, which collapses the IQR) is raised to a thousandth of a bin width,
so the fit is a point mass and is scored as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcore.design import cdfs
from quantcore.errors import InvalidSpecError, InvalidTensorError

FAMILIES = (
    "laplace",
    "gaussian",
    "logistic",
    "cauchy",
    "uniform",
    "gamma",
    "exponential",
    "alpha",
)
KLD_FLOOR = 1e-10
RANGE_QUANTILES = (0.001, 0.999)

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class DistributionFit:
    """One family's fitted parameters and its distances to the weights' histogram."""

    name: str
    sse: float
    kld: float
    params: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class FitReport:
    """Every family's fit, in ``FAMILIES`` order, and the names of the closest ones."""

    fits: tuple[DistributionFit, ...]
    best_sse: str
    best_kld: str

    def to_dict(self) -> dict[str, Any]:
        """The report's ``distribution`` object (docs/api.md)."""
        return {
            "fits": [{"name": f.name, "sse": f.sse, "kld": f.kld} for f in self.fits],
            "best_sse": self.best_sse,
            "best_kld": self.best_kld,
        }

    def ranking(self, metric: str) -> tuple[str, ...]:
        """Family names from the closest to the farthest by ``metric`` ("sse" or "kld")."""
        if metric not in ("sse", "kld"):
            raise InvalidSpecError(f"{metric=} must be 'sse' or 'kld'")
        ordered = sorted(self.fits, key=lambda f: float(getattr(f, metric)))
        return tuple(f.name for f in ordered)


def fit_pooled(pooled: np.ndarray) -> dict[str, Any] | None:
    """The report's ``distribution``: the fits to the finite ``pooled`` weights, None when
    they are constant (no shape to fit)."""
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size < 2 or pooled.min() == pooled.max():
        return None
    return fit_distributions(pooled).to_dict()


def fit_distributions(
    weights: npt.ArrayLike, *, bins: int = 256, sample: int = 200_000, seed: int = 0
) -> FitReport:
    """Fit every family in ``FAMILIES`` to ``weights`` and score it by SSE and KLD.

    See the module docstring for the formulas, the histogram range and the estimators.
    Raises ``InvalidSpecError`` for ``bins`` or ``sample`` below 2 and ``InvalidTensorError``
    for empty, non-numeric, non-finite or constant weights.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise InvalidSpecError(f"{bins=} must be an integer of at least 2")
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 2:
        raise InvalidSpecError(f"{sample=} must be an integer of at least 2")
    flat = _checked_flat(weights)
    wmin, wmax = float(flat.min()), float(flat.max())
    if not (np.isfinite(wmin) and np.isfinite(wmax)):
        bad = int(np.count_nonzero(~np.isfinite(flat)))
        raise InvalidTensorError(f"weights hold {bad} NaN or Inf values of {flat.size}")
    if wmin == wmax:
        raise InvalidTensorError(f"cannot fit distributions to constant weights (all {wmin})")

    rng = np.random.default_rng(seed)
    if flat.size > sample:
        picked = np.sort(rng.choice(flat.size, size=sample, replace=False))
        sub = flat[picked].astype(np.float64)
    else:
        sub = flat.astype(np.float64)
    low, high = (float(q) for q in np.quantile(sub, RANGE_QUANTILES))
    if not low < high:  # most weights share one value: fall back to the full range
        low, high = wmin, wmax
    counts, edges = np.histogram(flat, bins=bins, range=(low, high))
    p = counts / max(int(counts.sum()), 1)
    min_scale = (high - low) / bins * 1e-3

    fits = []
    for name in FAMILIES:
        dist, params = _ESTIMATORS[name](sub, wmin, wmax, min_scale)
        q = _bin_probabilities(dist, edges)
        fits.append(DistributionFit(name=name, sse=_sse(p, q), kld=_kld(p, q), params=params))
    best_sse = min(fits, key=lambda f: f.sse).name
    best_kld = min(fits, key=lambda f: f.kld).name
    return FitReport(fits=tuple(fits), best_sse=best_sse, best_kld=best_kld)


def _checked_flat(weights: npt.ArrayLike) -> npt.NDArray[np.floating]:
    flat = np.asarray(weights).ravel()
    if flat.size == 0:
        raise InvalidTensorError("cannot fit distributions to an empty tensor")
    if flat.dtype.kind in "iu":
        return flat.astype(np.float64)
    if flat.dtype.kind != "f":
        raise InvalidTensorError(f"weights must be real numbers, got dtype={flat.dtype.name}")
    if flat.dtype.itemsize < 4:  # float16: histogram and moments in float32
        return flat.astype(np.float32)
    return flat


def _sse(p: Floats, q: Floats) -> float:
    return float(np.sum((p - q) ** 2))


def _kld(p: Floats, q: Floats) -> float:
    occupied = p > 0
    return float(np.sum(p[occupied] * np.log(p[occupied] / np.maximum(q[occupied], KLD_FLOOR))))


@dataclass(frozen=True)
class _Fitted:
    """A family's CDF at its fitted location and scale."""

    cdf: cdfs.Cdf
    loc: float
    scale: float

    def at(self, x: Floats) -> Floats:
        return self.cdf((np.asarray(x, np.float64) - self.loc) / self.scale)


def _bin_probabilities(dist: _Fitted, edges: Floats) -> Floats:
    """Q(i) = F(e_{i+1}) - F(e_i), normalised to sum 1 (left at zero if the range has no mass)."""
    q = np.clip(np.diff(dist.at(edges)), 0.0, None)
    total = float(q.sum())
    return q / total if total > 0 else q


Fit = tuple[_Fitted, dict[str, float]]
Estimator = Callable[[Floats, float, float, float], Fit]


def _positive(scale: float, min_scale: float) -> float:
    return scale if np.isfinite(scale) and scale > min_scale else min_scale


def _laplace(x: Floats, wmin: float, wmax: float, floor: float) -> Fit:
    loc = float(np.median(x))
    scale = _positive(float(np.mean(np.abs(x - loc))), floor)
    return _Fitted(cdfs.laplace, loc, scale), {"loc": loc, "scale": scale}


def _gaussian(x: Floats, wmin: float, wmax: float, floor: float) -> Fit:
    loc, scale = float(np.mean(x)), _positive(float(np.std(x)), floor)
    return _Fitted(cdfs.normal, loc, scale), {"loc": loc, "scale": scale}


def _logistic(x: Floats, wmin: float, wmax: float, floor: float) -> Fit:
    loc = float(np.mean(x))
    scale = _positive(float(np.std(x)) * np.sqrt(3.0) / np.pi, floor)
    return _Fitted(cdfs.logistic, loc, scale), {"loc": loc, "scale": scale}


def _cauchy(x: Floats, wmin: float, wmax: float, floor: float) -> Fit:
    q1, loc, q3 = (float(v) for v in np.quantile(x, (0.25, 0.5, 0.75)))
    scale = _positive((q3 - q1) / 2, floor)
    return _Fitted(cdfs.cauchy, loc, scale), {"loc": loc, "scale": scale}


def _uniform(x: Floats, wmin: float, wmax: float, floor: float) -> Fit:
    scale = _positive(wmax - wmin, floor)
    return _Fitted(cdfs.uniform, wmin, scale), {"loc": wmin, "scale": scale}


def _gamma(x: Floats, wmin: float, wmax: float, floor: float) -> Fit:
    shifted = x - wmin
    mean, var = float(np.mean(shifted)), float(np.var(shifted))
    if mean <= 0 or var <= 0:
        shape, scale = 1.0, floor
    else:
        shape, scale = mean * mean / var, _positive(var / mean, floor)
    params = {"a": shape, "loc": wmin, "scale": scale}
    return _Fitted(cdfs.gamma(shape), wmin, scale), params


def _exponential(x: Floats, wmin: float, wmax: float, floor: float) -> Fit:
    scale = _positive(float(np.mean(x - wmin)), floor)
    return _Fitted(cdfs.exponential, wmin, scale), {"loc": wmin, "scale": scale}


def _alpha(x: Floats, wmin: float, wmax: float, floor: float) -> Fit:
    shifted = x - wmin
    inverse = 1.0 / shifted[shifted > 0]
    if inverse.size < 2:
        shape, scale = 1.0, floor
    else:
        q1, m, q3 = (float(v) for v in np.quantile(inverse, (0.25, 0.5, 0.75)))
        s = (q3 - q1) / 1.349
        if not (np.isfinite(s) and s > 0):
            shape, scale = 1.0, floor
        else:
            shape, scale = m / s, _positive(1.0 / s, floor)
    params = {"a": shape, "loc": wmin, "scale": scale}
    return _Fitted(cdfs.alpha(shape), wmin, scale), params


_ESTIMATORS: dict[str, Estimator] = {
    "laplace": _laplace,
    "gaussian": _gaussian,
    "logistic": _logistic,
    "cauchy": _cauchy,
    "uniform": _uniform,
    "gamma": _gamma,
    "exponential": _exponential,
    "alpha": _alpha,
}
