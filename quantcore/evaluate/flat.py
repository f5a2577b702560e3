"""Flat inputs: every float input of the graph held at one constant value per sample.

Data-free calibration (spec ``calibration="flat"``, ``quantcore.jobs.flat_gptq``) runs the
float model on them. A flat input carries no content, so what the layers' inputs show on it
is what they show on any input: channels that a layer's bias or a saturated activation
holds at a large near-constant value, and the padding at the borders. Those channels are what
a quantized weight's error multiplies most, and random inputs made up from the graph would
hide them under noise of the wrong statistics.

The shapes, batch and non-float inputs (token ids, masks) come from ``synthetic_set``; each
sample's float inputs get one of ``LEVELS`` (in the units of a normalised input), cycling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx

from quantcore.evaluate.synthetic import SyntheticSet, synthetic_set

LEVELS = (-1.5, -0.5, 0.5, 1.5)


@dataclass(frozen=True, kw_only=True)
class FlatSet:
    """``len(levels)`` flat samples with the interface ``capture_stats`` reads."""

    base: SyntheticSet
    levels: tuple[float, ...] = LEVELS
    labels: None = None

    @property
    def fixed_batch(self) -> int | None:
        return self.base.fixed_batch

    @property
    def samples(self) -> int:
        return len(self.levels)

    @property
    def has_float_input(self) -> bool:
        return self.base.has_float_input

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], None]]:
        del batch_size  # batches of the synthetic set's own size
        template = next(iter(self.base.batches(self.base.batch)))[0]
        step = self.base.batch if self.fixed_batch != 1 else 1
        for start in range(0, len(self.levels), step):
            levels = [self.levels[(start + j) % len(self.levels)] for j in range(step)]
            feeds = {}
            for spec in self.base.inputs:
                value = template[spec.name]
                if spec.limit is None and not spec.ones and value.dtype.kind == "f":
                    flat = np.empty_like(value)
                    if spec.batched:
                        for j in range(value.shape[0]):
                            flat[j] = levels[j % len(levels)]
                    else:
                        flat[...] = levels[0]
                    value = flat
                feeds[spec.name] = value
            yield feeds, None


def flat_set(model: onnx.ModelProto) -> FlatSet:
    return FlatSet(base=synthetic_set(model))
