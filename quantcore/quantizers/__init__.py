"""Quantizer families, one module each, and ``quantize``: one family applied to normalised weights.

``design(spec, sample)`` picks the family of a resolved ``QuantizerSpec``; ``sample`` (weights in
units of xmax) is only read by the data-driven exponential family. ``quantize(x, spec, xmax)``
is the pure function of (normalised weights, spec, xmax) that every family offers: codes and a
decoder whose ``decode`` reproduces the dequantized tensor bit for bit. The same chunked kernel
(``quantcore.quantizers.stream``) serves it and the per-layer and per-channel paths of
``quantcore.compress.layerwise``.
"""

from __future__ import annotations

from quantcore.quantizers.base import Design
from quantcore.quantizers.families import design
from quantcore.quantizers.minifloat import round_to_minifloat
from quantcore.quantizers.stream import FamilyResult, quantize

__all__ = ["Design", "FamilyResult", "design", "quantize", "round_to_minifloat"]
