"""Per-channel support thresholds of every channel at once (``choose_support_rows``).

The channel path's rows of normalised weights go to the batched rules of
``quantcore.design.support_rows``, with the ``mse`` rule measured by
``quantcore.quantizers.measure.sample_errors`` on the same float32 rows (every ``stride``-th
weight) that the one-channel search measures: the thresholds are the same, bit for bit.
"""

from __future__ import annotations

import numpy as np

from quantcore.design.support import SupportChoice
from quantcore.design.support_rows import choose_support_rows
from quantcore.quantizers.base import Design
from quantcore.quantizers.measure import measurable, sample_errors
from quantcore.spec import QuantizerSpec, Support

# False: thresholds one channel at a time (the reference of the batched search).
ROW_SEARCH = True


def row_choices(
    spec: QuantizerSpec, sample: np.ndarray, support: Support, mse_limit: int,
    fitted: Design | None = None,
) -> list[SupportChoice | None]:
    """The support choice of each row of ``sample``; None for every row where no batch
    measurement exists (the exponential family's ``mse`` at 1 bit), and the caller
    searches row by row. ``fitted``: ``mse`` measures every row with this one design."""
    if not ROW_SEARCH or (support is Support.MSE and not measurable(spec, fitted)):
        return [None] * sample.shape[0]
    stride = max(1, sample.shape[1] // mse_limit)
    measure = None
    if support is Support.MSE:
        measure = sample_errors(spec, sample[:, ::stride], fitted)
    return list(choose_support_rows(support, levels=spec.levels, rows=sample,
                                    value=spec.support_value, errors_at=measure))  # fmt: skip
