"""The report's ``allocation`` block for a spec with a ``target`` (``quantcore.target``).

What the search chose (the common step, the Laplacian model's step that seeded it, what it
predicted on its sample) and what the whole tensors achieved: pooled weight SQNR and bits of
codes per weight (their order-0 entropy; the package's coder is within 0.1% of it), whether
the target is met, and per tensor its step, bits, entropy and SQNR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from quantcore.compress.allocate import Allocation
from quantcore.compress.pipeline import CodedWeight
from quantcore.report.build import json_safe, pooled_sqnr_db, weighted_mean

# The achieved value may miss the goal by this much where the search judged a sample.
TOLERANCE = {"weight_sqnr_db": 0.01, "bits_per_weight": 0.001}


def _step(weight: CodedWeight) -> float:
    return float(np.max(np.asarray(weight.decoder.scale, np.float64)))


def allocation_block(
    allocation: Allocation, weights: Sequence[CodedWeight], artifacts: Mapping[str, int]
) -> dict[str, Any]:
    layers = [w.layer for w in weights]
    achieved = {
        "weight_sqnr_db": pooled_sqnr_db(layers, "sqnr_db"),
        "bits_per_weight": weighted_mean(layers, "entropy_bits"),
    }
    (key, goal), = allocation.target.to_dict().items()
    value = achieved[key]
    if value is None:  # exact weights: infinitely good, zero error
        met = key == "weight_sqnr_db"
    elif key == "weight_sqnr_db":
        met = value >= goal - TOLERANCE[key]
    else:
        met = value <= goal + TOLERANCE[key]
    params = sum(int(r["params"]) for r in layers)
    package = artifacts.get("model.qpack")
    return json_safe({
        **allocation.to_dict(),
        "achieved": {**achieved, "met": met,
                     "package_bits_per_weight": 8 * package / params if package and params
                     else None},
        "layers": [
            {"name": w.name, "step": _step(w), "bits": w.layer["bits"],
             "entropy_bits": w.layer["entropy_bits"], "sqnr_db": w.layer["sqnr_db"],
             "params": w.layer["params"]}
            for w in weights
        ],
    })  # fmt: skip
