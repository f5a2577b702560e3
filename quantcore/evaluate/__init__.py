"""Evaluation of quantized models against their float originals on a caller's dataset.

- ``dataset``: ``inspect_dataset``, ``check_dataset`` (an ``.npz`` against a model, before
  any work) and ``EvalSet`` (the checked set, streamed in batches).
- ``runner``: ``evaluate`` (both models in onnxruntime, batch by batch).
- ``accuracy``: ``evaluate_job``, the hook a quantize job calls (the ``accuracy`` dict).
- ``scores``: top-1/top-5, agreement, output SQNR; ``AccuracyReport`` (docs/api.md's
  ``accuracy`` block).
"""

from quantcore.evaluate.accuracy import evaluate_job
from quantcore.evaluate.dataset import EvalSet, check_dataset, inspect_dataset
from quantcore.evaluate.runner import evaluate
from quantcore.evaluate.scores import AccuracyReport, TopK

__all__ = [
    "AccuracyReport",
    "EvalSet",
    "TopK",
    "check_dataset",
    "evaluate",
    "evaluate_job",
    "inspect_dataset",
]
