"""Evaluation of quantized models against their float originals on a caller's dataset.

- ``dataset``: ``inspect_dataset``, ``check_dataset`` (an ``.npz`` against a model, before
  any work) and ``EvalSet`` (the checked set, streamed in batches).
- ``runner``: ``evaluate`` (both models in onnxruntime, batch by batch).
- ``accuracy``: ``evaluate_job``, the hook a quantize job calls (the ``accuracy`` dict).
- ``scores``: top-1/top-5, agreement, output SQNR; ``AccuracyReport`` (docs/api.md's
  ``accuracy`` block).
"""

# The names below load their modules when first used: ``runner`` imports onnxruntime, which a
# job that only reads ``synthetic`` or ``flat`` (the quantize path, at every start) must not.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quantcore.evaluate.accuracy import evaluate_job
    from quantcore.evaluate.dataset import EvalSet, check_dataset, inspect_dataset
    from quantcore.evaluate.runner import evaluate
    from quantcore.evaluate.scores import AccuracyReport, TopK

_MODULES = {
    "evaluate_job": "accuracy",
    "EvalSet": "dataset",
    "check_dataset": "dataset",
    "inspect_dataset": "dataset",
    "evaluate": "runner",
    "AccuracyReport": "scores",
    "TopK": "scores",
}

__all__ = [
    "AccuracyReport",
    "EvalSet",
    "TopK",
    "check_dataset",
    "evaluate",
    "evaluate_job",
    "inspect_dataset",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
