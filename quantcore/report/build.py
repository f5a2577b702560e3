"""The job report (the ``report`` of docs/api.md), assembled from the pipeline's results.

Model-wide figures are derived from the layers' rows, so no weight is read twice:

- ``sqnr_db = 10·log10(Σ S_i / Σ D_i)`` over quantized tensors, with the signal energy
  ``S_i = n_i·(std_i² + mean_i²)`` and the distortion ``D_i = S_i·10^(−sqnr_i/10)``; a layer
  quantized without error (``sqnr_i`` infinite or null) adds no distortion. When no layer has
  any distortion the result is infinite, reported as ``null``.
- ``sqnr_theory_db``: the same with each layer's ``sqnr_theory_db``; ``null`` if any layer has
  no closed form.
- ``bits_per_weight`` / ``entropy_bits_per_weight``: means of the layers' ``bits`` /
  ``entropy_bits`` weighted by their parameter counts.
- ``compression_ratio = original_bytes / size of model.qpack``.

Every float in the report is finite or ``null`` (JSON has no NaN or Infinity).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars made plain and NaN/Inf replaced by ``None``."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    value = float(value)
    return value if not math.isnan(value) else None


def pooled_sqnr_db(layers: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Model-wide SQNR from the layers' ``key`` column (see the module docstring)."""
    signal = distortion = 0.0
    for row in layers:
        params = float(row["params"])
        mean, std = _number(row, "mean") or 0.0, _number(row, "std") or 0.0
        energy = params * (std * std + mean * mean)
        sqnr = _number(row, key)
        if row.get(key) is None and key == "sqnr_theory_db":
            return None
        signal += energy
        if sqnr is not None and math.isfinite(sqnr):
            distortion += energy * 10.0 ** (-sqnr / 10.0)
    if distortion <= 0.0 or signal <= 0.0:
        return None
    return 10.0 * math.log10(signal / distortion)


def weighted_mean(layers: Sequence[Mapping[str, Any]], key: str) -> float | None:
    total = sum(float(r["params"]) for r in layers)
    values = [(float(r["params"]), _number(r, key)) for r in layers]
    if total <= 0 or any(v is None for _, v in values):
        return None
    return sum(n * v for n, v in values if v is not None) / total


def summary(
    layers: Sequence[Mapping[str, Any]],
    *,
    skipped: int,
    original_bytes: int,
    artifacts: Mapping[str, int],
) -> dict[str, Any]:
    package = artifacts.get("model.qpack")
    return {
        "quantized_tensors": len(layers),
        "quantized_params": int(sum(int(r["params"]) for r in layers)),
        "skipped_tensors": skipped,
        "bits_per_weight": weighted_mean(layers, "bits"),
        "entropy_bits_per_weight": weighted_mean(layers, "entropy_bits"),
        "sqnr_db": pooled_sqnr_db(layers, "sqnr_db"),
        "sqnr_theory_db": pooled_sqnr_db(layers, "sqnr_theory_db"),
        "original_bytes": original_bytes,
        "artifacts": dict(artifacts),
        "compression_ratio": original_bytes / package if package else None,
    }


def build_report(
    *,
    model: Mapping[str, Any],
    spec: Mapping[str, Any],
    layers: Sequence[Mapping[str, Any]],
    skipped: Sequence[Mapping[str, Any]],
    distribution: Mapping[str, Any] | None,
    accuracy: Mapping[str, Any] | None,
    artifacts: Mapping[str, int],
    timings: Mapping[str, float],
    original_bytes: int,
) -> dict[str, Any]:
    """The report of docs/api.md, JSON-ready; ``original_bytes``: the model file and its
    external data."""
    return json_safe(
        {
            "model": dict(model),
            "spec": dict(spec),
            "summary": summary(
                layers,
                skipped=len(skipped),
                original_bytes=original_bytes,
                artifacts=artifacts,
            ),
            "layers": [dict(r) for r in layers],
            "skipped": [dict(s) for s in skipped],
            "distribution": dict(distribution) if distribution is not None else None,
            "accuracy": dict(accuracy) if accuracy is not None else None,
            "timings": dict(timings),
        }
    )
