"""``"rdoq": "auto"``: trellis-coded quantization or scalar RDOQ, whichever codes the model in
fewer bytes at the spec's target, scalar only where it saves ``SCALAR_SAVING`` of them.

Measured on five real models at 6–35 dB of weight SQNR: TCQ's codes are 1.5–4% smaller where
they take about 2 bits a weight or more and 1–7% larger below that (its stream v5's static
tables weigh on a low rate, where scalar codes get stream v4's adaptive contexts). The
crossover moved from 1.2 to 2.9 bits a weight from model to model, and the allocation's
order-0 rate estimates favour TCQ everywhere, so the choice is measured: each mode's
allocation meets the target on its own, then the package sections of whole tensors quantized
and coded that way are summed, and the smaller total wins (the trellis where the scalar
mode saves less than ``SCALAR_SAVING``: the trellis packages decode faster).

The probe is every tensor up to ``PROBE_WEIGHTS`` weights: then the choice is exact, and a
chosen trellis keeps its tensors, so the job costs one scalar pass more (on five real
models of 0.8-3 M weights at 6-35 dB: the smaller mode at all 40 points, in 1.2-1.6x the time
of ``"trellis"``). Past it, the whole tensors that hold evenly spaced weights of the model (the
coders' contexts run along a tensor, so a sample of weights would not do; a probe of every
k-th tensor, 0.8-1.4 M weights, picked the larger mode at 6 of those 40 points, by up to 2.7%).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from quantcore.compress.allocate import Allocation, Mapper, TensorSample, allocate
from quantcore.spec import QuantSpec

# The share of the trellis mode's bytes the scalar mode must save to be chosen. Above about
# half a bit a weight its packages decode 1.9-3.7x slower (their v4 streams decoded a flag at
# a time; the trellis mode's table-coded streams about 3 ns a code): on five real models at
# 4-22 dB (a Zen 4, 2026-12-05) the scalar mode was smaller at three points, by 9.9% (ocr-det
# at 3.9 dB, where it also decodes faster), 5.3% (ocr-rec at 4.8 dB) and 0.9% (ocr-det at
# 6.1 dB: 3.2 ms of decoding against 2.1).
SCALAR_SAVING = 0.02
PROBE_WEIGHTS = 4_000_000
QUANTILES = 32  # past PROBE_WEIGHTS: the tensors holding these evenly spaced weights
MOST_PROBE_WEIGHTS = 32_000_000  # fewer marks past it (a single tensor may hold more)

T = TypeVar("T")
# (the mode's spec, its allocation, a tensor's name) -> the tensor quantized and coded as the
# job does it, and the bytes of its package section.
CodeTensor = Callable[[QuantSpec, Allocation, str], tuple[T, int]]


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
        why = (f" (scalar saves under {SCALAR_SAVING:.0%}: trellis packages decode faster)"
               if self.trellis and self.scalar_bytes < self.trellis_bytes else "")
        return (f'rdoq "auto": {chosen} RDOQ, {sizes[chosen]:,} bytes of codes against '
                f"{sizes[other]:,} for {other} on {self.probe_tensors} tensor(s) of "
                f"{self.probe_weights:,} weights{why}")  # fmt: skip


def trellis_wins(trellis_bytes: int, scalar_bytes: int) -> bool:
    """Whether the trellis mode is kept: unless the scalar mode saves ``SCALAR_SAVING`` of its
    bytes (ties: the trellis, the faster to decode)."""
    return scalar_bytes > (1 - SCALAR_SAVING) * trellis_bytes


def probe_names(names: Sequence[str], sizes: Mapping[str, int]) -> list[str]:
    """Every tensor up to ``PROBE_WEIGHTS`` weights in all; past it the tensors that hold
    ``QUANTILES`` evenly spaced weights of the model (so the large tensors, which hold most
    of the bytes, are in, and every depth is represented), fewer marks while those hold more
    than ``MOST_PROBE_WEIGHTS`` (the trellis mode's coded probe is held until the job writes it)."""
    total = sum(sizes[n] for n in names)
    if total <= PROBE_WEIGHTS:
        return list(names)
    marks = QUANTILES
    while True:
        chosen = _holding(names, sizes, [(k + 0.5) * total / marks for k in range(marks)])
        if marks == 1 or sum(sizes[n] for n in chosen) <= MOST_PROBE_WEIGHTS:
            return chosen
        marks //= 2


def _holding(names: Sequence[str], sizes: Mapping[str, int], marks: list[float]) -> list[str]:
    """The tensors (in order) whose weights, counted through the model, include a mark."""
    chosen, start = [], 0
    for name in names:
        end = start + sizes[name]
        if any(start <= m < end for m in marks):
            chosen.append(name)
        start = end
    return chosen


def choose(
    spec: QuantSpec, names: Sequence[str], sizes: Mapping[str, int],
    samples: Mapping[str, TensorSample], code: CodeTensor[T],
    *, map_tensors: Mapper = map,
) -> tuple[Allocation, dict[str, T]]:
    """The allocation of the mode that codes the probe smaller (``trellis_wins``),
    its choice in ``choice`` and ``notes``; and, if that is the trellis, the probe's tensors as
    it coded them, for the job to keep (with every tensor probed, none is searched twice).

    ``map_tensors`` runs ``code`` over the probe's tensors and the allocations' measurements
    over the samples (the job's thread pool's ``map``). Only the trellis mode's tensors are
    held: a scalar choice quantizes its tensors again in the job, a small share of the
    trellis search's time, rather than two coded copies of the probe being held until the
    modes are compared."""
    assert spec.target is not None
    probe = probe_names(names, sizes)
    target = spec.target

    def mode(trellis: bool) -> tuple[QuantSpec, Allocation]:
        return (dataclasses.replace(spec, trellis=trellis, rdoq_auto=False),
                allocate(samples, target, rdoq=True, trellis=trellis, map_samples=map_tensors))

    scalar_mode, scalar_allocation = mode(False)
    scalar_bytes = sum(size for _, size in map_tensors(
        lambda name: code(scalar_mode, scalar_allocation, name), probe))
    trellis_mode, trellis_allocation = mode(True)
    coded = dict(zip(probe, map_tensors(
        lambda name: code(trellis_mode, trellis_allocation, name), probe), strict=True))
    trellis_bytes = sum(size for _, size in coded.values())
    choice = RdoqChoice(trellis=trellis_wins(trellis_bytes, scalar_bytes), probe_tensors=len(probe),
                        probe_weights=sum(sizes[n] for n in probe), trellis_bytes=trellis_bytes,
                        scalar_bytes=scalar_bytes)  # fmt: skip
    kept = trellis_allocation if choice.trellis else scalar_allocation
    kept = dataclasses.replace(kept, choice=choice.to_dict(), notes=(*kept.notes, choice.note()))
    return kept, ({name: result for name, (result, _) in coded.items()} if choice.trellis
                  else {})
