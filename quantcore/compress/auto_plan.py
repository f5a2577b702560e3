"""What granularity ``auto`` gives each tensor, and why (the layer row's ``choice``).

Every tensor gets blocks of ``auto_group_size(bits)`` along its reduction axis (128 from 7
bits, 32 below: ``quantcore.spec``), except the first layers (``first_layers``): they read the
model's raw input and pass their error to every later layer, so they get blocks of
``FIRST_LAYER_GROUP``, or of the finest size between that and the default that still fits the
size budget. The budget is ``BUDGET_SHARE`` of the runnable bytes of the quantized tensors
(codes in their container, one float16 scale per block): the extra scales of all refined
tensors together stay under it, smallest tensors first, so the runnable model stays within a
few percent of ``(bits + scale bits)/8`` bytes per weight. First layers are usually a few
hundred weights (an RGB stem); where one is most of the model (a token embedding), the budget
keeps it at the default.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from quantcore.compress.first_layers import input_layers
from quantcore.formats.load import Model
from quantcore.formats.onnx_reader import OnnxModel
from quantcore.spec import Granularity, QuantSpec
from quantcore.spec_defaults import AUTO_HIGH_BITS, auto_group_size

FIRST_LAYER_GROUP = 16
BUDGET_SHARE = 0.02
SCALE_BYTES = 2  # one float16 scale per block


@dataclass(frozen=True, kw_only=True)
class AutoChoice:
    group_size: int
    reason: str


def container_bits(bits: int) -> int:
    """Bits per code in the runnable model: 4-bit containers up to 4 bits, then 8, then 16."""
    return 4 if bits <= 4 else 8 if bits <= 8 else 16


def _default_reason(bits: int, size: int) -> str:
    rule = f"{AUTO_HIGH_BITS} bits and up" if bits >= AUTO_HIGH_BITS else (
        f"below {AUTO_HIGH_BITS} bits")
    return f"auto: blocks of {size} at {bits} bits (the rule for {rule})"


def plan_auto(
    sizes: Mapping[str, int], bits: Mapping[str, int], first: Collection[str]
) -> dict[str, AutoChoice]:
    """Each tensor's block size and the reason (module docstring). ``sizes`` and ``bits``:
    the weights and bits of every quantized tensor; ``first``: the first layers among them."""
    plan = {}
    runnable = 0.0
    for name, size in sizes.items():
        group = auto_group_size(bits[name])
        plan[name] = AutoChoice(group_size=group, reason=_default_reason(bits[name], group))
        runnable += size * (container_bits(bits[name]) / 8 + SCALE_BYTES / group)
    left = BUDGET_SHARE * runnable
    for name in sorted((n for n in first if n in sizes), key=lambda n: (sizes[n], n)):
        base = plan[name].group_size
        group = FIRST_LAYER_GROUP
        while group < base:
            extra = sizes[name] * SCALE_BYTES * (1 / group - 1 / base)
            if extra <= left:
                left -= extra
                plan[name] = AutoChoice(group_size=group, reason=(
                    f"auto: blocks of {group} (default {base}) at {bits[name]} bits: a first "
                    "layer, reading the model's raw input, whose error reaches every later "
                    f"layer; its extra scales fit the {BUDGET_SHARE:.0%} size budget"
                ))  # fmt: skip
                break
            group *= 2
        else:
            plan[name] = AutoChoice(group_size=base, reason=(
                f"{plan[name].reason}; a first layer, but finer blocks would pass the "
                f"{BUDGET_SHARE:.0%} size budget"
            ))  # fmt: skip
    return plan


def model_plan(model: Model, spec: QuantSpec, names: Sequence[str]) -> dict[str, AutoChoice]:
    """The plan of ``spec`` for the tensors ``names`` of ``model``: empty unless its
    granularity is ``auto``; first layers only where the model has a graph."""
    if spec.granularity is not Granularity.AUTO:
        return {}
    sizes = {t.name: t.size for t in model.tensors}
    first = input_layers(model.proto, names) if isinstance(model, OnnxModel) else frozenset()
    return plan_auto({n: sizes[n] for n in names},
                     {n: spec.quantizer_for(n).bits for n in names}, first)  # fmt: skip
