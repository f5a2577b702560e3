"""``"rdoq": "auto"``: trellis-coded quantization or scalar RDOQ, whichever codes the model in
fewer bytes at the spec's target.

Measured on five real models at 6–35 dB of weight SQNR: TCQ's codes are 1.5–4% smaller where
they take about 2 bits a weight or more and 1–7% larger below that (its stream v5's static
tables weigh on a low rate, where scalar codes get stream v4's adaptive contexts). The
crossover moved from 1.2 to 2.9 bits a weight from model to model, and the allocation's
order-0 rate estimates favour TCQ everywhere, so the choice is measured: each mode's
allocation meets the target on its own, then the package sections of whole tensors quantized
and coded that way are summed, and the smaller total wins. The probe is every tensor up to
``PROBE_WEIGHTS`` weights, past it an evenly spread subset of whole tensors (the coders'
contexts run along a tensor, so a sample of weights would not do): on those models the choice
costs 1–3 s more than ``"trellis"`` alone, whose jobs take 2–7 s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantcore.compress.allocate import Allocation

PROBE_WEIGHTS = 1_000_000

# (trellis, probe tensors) -> that mode's allocation and the probe's package-section bytes.
Measure = Callable[[bool, Sequence[str]], tuple[Allocation, int]]


@dataclass(frozen=True, kw_only=True)
class RdoqChoice:
    trellis: bool
    probe_tensors: int
    probe_weights: int
    trellis_bytes: int
    scalar_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": "trellis" if self.trellis else "scalar", **{
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "trellis"
        }}  # fmt: skip

    def note(self) -> str:
        chosen, other = ("trellis", "scalar") if self.trellis else ("scalar", "trellis")
        sizes = {"trellis": self.trellis_bytes, "scalar": self.scalar_bytes}
        return (f'rdoq "auto": {chosen} RDOQ, {sizes[chosen]:,} bytes of codes against '
                f"{sizes[other]:,} for {other} on {self.probe_tensors} tensor(s) of "
                f"{self.probe_weights:,} weights")  # fmt: skip


def probe_names(names: Sequence[str], sizes: Mapping[str, int]) -> list[str]:
    """Every tensor up to ``PROBE_WEIGHTS`` weights in all; past it every k-th tensor (in
    the model's order, so every depth is represented) with k set by the total."""
    total = sum(sizes[n] for n in names)
    if total <= PROBE_WEIGHTS:
        return list(names)
    stride = -(-total // PROBE_WEIGHTS)
    return list(names[stride // 2 :: stride]) or [names[0]]


def choose(
    names: Sequence[str], sizes: Mapping[str, int], measure: Measure
) -> Allocation:
    """The allocation of the mode that codes the probe smaller (ties: scalar, the faster),
    with the choice in its ``choice`` and ``notes``."""
    probe = probe_names(names, sizes)
    scalar, scalar_bytes = measure(False, probe)
    trellis, trellis_bytes = measure(True, probe)
    choice = RdoqChoice(trellis=trellis_bytes < scalar_bytes, probe_tensors=len(probe),
                        probe_weights=sum(sizes[n] for n in probe), trellis_bytes=trellis_bytes,
                        scalar_bytes=scalar_bytes)  # fmt: skip
    kept = trellis if choice.trellis else scalar
    return dataclasses.replace(kept, choice=choice.to_dict(), notes=(*kept.notes, choice.note()))
