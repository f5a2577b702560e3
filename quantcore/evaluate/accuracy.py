"""The hook a quantize job calls when it has a dataset: the report's ``accuracy`` block."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantcore.evaluate.dataset import EvalSet
from quantcore.evaluate.runner import evaluate


def evaluate_job(
    float_model: Path | bytes,
    quantized_model: Path | bytes,
    evalset: EvalSet,
    *,
    batch_size: int,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Evaluate both models on the set checked by ``check_dataset`` (call that before any
    work); returns the JSON-ready ``accuracy`` block."""
    return evaluate(
        float_model, quantized_model, evalset, batch_size=batch_size, progress=progress
    ).to_dict()
