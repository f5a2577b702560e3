"""The smallest weights stay in float: what they would save is little, what they cost is not.

Measured on the real models of ``bench/realmodels``, a model's smallest weights cost it far
more output fidelity than their share of its bytes: a depthwise or squeeze-excitation
convolution, a detection head's last layers, a first convolution, a transformer's token-type
embedding (768 weights, added to every token: minilm-l3 at 8 bits 35.4 -> 38.4 dB of output
SQNR with it in float, for 2 kB). So the default keeps the smallest selected weights in float,
smallest first, while the bytes they add (their float bytes less their codes) stay within
``keep_small`` of the codes of every selected weight. A spec that names its tensors
(``include``) or a tensor's quantizer (``overrides``) has said what it wants, and gets it; so
has one with a rate or distortion ``target``, which every selected weight's step serves.
The default share, 1% (``spec.DEFAULT_KEEP_SMALL``), was chosen on those models' outputs on two
input sets: +2.5 dB of output SQNR on average at 8 bits (none down by more than 0.01 dB), +2.1
at 6 bits, for at most 0.9% more bytes; 2% gained a little more for twice the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from quantcore.spec import QuantSpec

# The floating-point dtypes the policy quantizes (``roles.FLOAT_DTYPES``), and their bytes.
FLOAT_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


class Weight(Protocol):
    """What the rule reads of a tensor (``quantcore.formats.roles.Candidate``)."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def size(self) -> int: ...


def kept_small(selected: Sequence[Weight], spec: QuantSpec) -> dict[str, str]:
    """The names of ``selected`` (the weights the policy quantizes) that stay in float, with
    the reason the report gives; none with ``include``, a ``target``, or ``keep_small`` 0."""
    if spec.keep_small <= 0 or spec.include or spec.target is not None:
        return {}
    bits = spec.quantizer.resolved().bits
    budget = spec.keep_small * sum(t.size for t in selected) * bits / 8
    reason = (
        f"small: kept in float (the smallest weights, within keep_small={spec.keep_small:g} "
        "of the quantized weights' bytes)"
    )
    kept: dict[str, str] = {}
    spent = 0.0
    for tensor in sorted(selected, key=lambda t: (t.size, t.name)):
        if any(o.matches(tensor.name) for o in spec.overrides):
            continue  # its quantizer was asked for
        cost = tensor.size * (FLOAT_BYTES[tensor.dtype] - bits / 8)
        if cost <= 0 or spent + cost > budget:
            break
        kept[tensor.name] = f"{tensor.size} elements, {reason}"
        spent += cost
    return kept
