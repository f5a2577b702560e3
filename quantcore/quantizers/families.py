"""Which family implements a resolved ``QuantizerSpec``."""

from __future__ import annotations

import numpy as np

from quantcore.quantizers.base import Design
from quantcore.quantizers.deadzone import design_deadzone
from quantcore.quantizers.exponential import design_exponential
from quantcore.quantizers.minifloat import design_minifloat
from quantcore.quantizers.mulaw import design_mulaw
from quantcore.quantizers.uniform import design_uniform
from quantcore.spec import Method, QuantizerSpec


def design(spec: QuantizerSpec, sample: np.ndarray | None = None) -> Design:
    """The design of ``spec`` (resolved).

    ``sample`` (normalised weights divided by xmax) is read only by the exponential family,
    whose levels are fitted to the weights; the other families depend on the spec alone.
    """
    if spec.method is Method.UNIFORM:
        return design_uniform(spec)
    if spec.method is Method.DEADZONE:
        return design_deadzone(spec)
    if spec.method is Method.MULAW:
        return design_mulaw(spec)
    if spec.method is Method.FLOAT:
        return design_minifloat(spec)
    return design_exponential(spec, np.zeros(0) if sample is None else sample)
