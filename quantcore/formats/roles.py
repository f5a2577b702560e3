"""What each tensor of a model does, and which tensors the default policy quantizes.

A tensor's role comes from the operators that consume it (the input slot it fills):

- ``weight``: the weight of ``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul``, the recurrent
  matrices of ``LSTM``/``GRU``/``RNN`` and embedding tables (data of ``Gather``);
- ``bias``: the bias slot of those operators, or a vector added by ``Add``;
- ``norm``: parameters of ``BatchNormalization`` and the other normalisation operators;
- ``quantized``: an input of an operator of an already-quantized graph (``DequantizeLinear``,
  ``QLinearConv``, ``MatMulInteger``, ...), left alone;
- ``other``: anything else (``Resize`` scales, ``Clip`` bounds, constants of arithmetic).

A tensor used by several nodes takes the strongest role (``quantized`` over ``weight`` over
``bias`` over ``norm`` over ``other``). ``channel_axis`` is the axis of the output channels of
a weight (0 for ``Conv``; 1 for ``ConvTranspose``; for ``Gemm`` it follows ``transB``; the last
axis of a ``MatMul`` right operand), or ``None`` where no such axis exists. ``block_axis`` is
the axis the operator sums over (Conv: input channels, and with ``block_trailing`` the window
after them; MatMul: K; Gemm: by ``transB``; recurrent matrices and embedding tables: the
last), along which granularity ``group`` puts its blocks.

The default policy (``select``) quantizes floating-point weights of at least
``TINY_ELEMENTS`` elements; the spec's ``include``, ``exclude`` and ``min_elements`` change
that as documented on ``select``. Every tensor left in float gets a reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from quantcore.checks import search
from quantcore.errors import NoWeightsError
from quantcore.spec import QuantSpec

# Tensors below this many elements stay in float by default: the scale and offset of a
# quantizer would cost about as much as the tensor itself.
TINY_ELEMENTS = 16

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


class Role(StrEnum):
    WEIGHT = "weight"
    BIAS = "bias"
    NORM = "norm"
    QUANTIZED = "quantized"
    OTHER = "other"


_STRENGTH = {Role.QUANTIZED: 4, Role.WEIGHT: 3, Role.BIAS: 2, Role.NORM: 1, Role.OTHER: 0}

QUANTIZED_OPS = frozenset(
    {
        "DequantizeLinear",
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "MatMulNBits",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "GatherBlockQuantized",
        "QAttention",
        "QLinearLeakyRelu",
        "QLinearSigmoid",
        "QLinearConcat",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
    }
)

NORM_OPS = frozenset(
    {
        "BatchNormalization",
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "SkipLayerNormalization",
        "SimplifiedLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "RMSNormalization",
        "LpNormalization",
    }
)


@dataclass(frozen=True, kw_only=True)
class Use:
    """One consumer of a tensor: the operator, the input slot and the attributes that matter."""

    op_type: str
    slot: int
    trans_a: bool = False
    trans_b: bool = False


@dataclass(frozen=True, kw_only=True)
class Assignment:
    role: Role
    channel_axis: int | None
    used_by: str  # op type that decided the role ("" when unused)
    block_axis: int | None = None
    block_trailing: bool = False  # the axes after block_axis are summed over too


def role_of_use(use: Use, shape: Sequence[int]) -> tuple[Role, int | None]:
    """Role and channel axis that one use gives a tensor of this ``shape``."""
    op, slot, ndim = use.op_type, use.slot, len(shape)
    if op in QUANTIZED_OPS:
        return Role.QUANTIZED, None
    if op in NORM_OPS:
        return (Role.NORM, None) if slot > 0 else (Role.OTHER, None)
    if op in ("Conv", "ConvTranspose"):
        if slot == 1:
            return Role.WEIGHT, 0 if op == "Conv" else (1 if ndim > 1 else None)
        if slot == 2:
            return Role.BIAS, None
    if op == "Gemm":
        if slot == 1:
            return Role.WEIGHT, 0 if use.trans_b else 1
        if slot == 0:
            return Role.WEIGHT, 1 if use.trans_a else 0
        if slot == 2:
            return Role.BIAS, None
    if op == "MatMul" and slot in (0, 1):
        if ndim < 2:
            return Role.WEIGHT, None
        return Role.WEIGHT, ndim - 1 if slot == 1 else ndim - 2
    if op in ("LSTM", "GRU", "RNN"):
        if slot in (1, 2):
            return Role.WEIGHT, 1
        if slot == 3:
            return Role.BIAS, None
    if op == "Gather" and slot == 0 and ndim >= 2:
        return Role.WEIGHT, 0
    if op in ("Add", "Sub") and sum(d > 1 for d in shape) <= 1:  # a vector, broadcast
        return Role.BIAS, None
    return Role.OTHER, None


def block_axis_of_use(use: Use, shape: Sequence[int]) -> int | None:
    """The axis that ``use``'s operator sums over in a weight of this ``shape``."""
    op, slot, ndim = use.op_type, use.slot, len(shape)
    if ndim < 2:
        return None
    if op == "Conv" and slot == 1:
        return 1
    if op == "ConvTranspose" and slot == 1:
        return 0
    if op == "Gemm" and slot in (0, 1):
        transposed = use.trans_b if slot == 1 else not use.trans_a
        return 1 if transposed else 0
    if op == "MatMul" and slot in (0, 1):
        return ndim - 2 if slot == 1 else ndim - 1
    if (op in ("LSTM", "GRU", "RNN") and slot in (1, 2)) or (op == "Gather" and slot == 0):
        return ndim - 1
    return None


def assign(uses: Sequence[Use], shape: Sequence[int]) -> Assignment:
    """The strongest role among ``uses``; the first use with that role sets the channel axis."""
    best = Assignment(role=Role.OTHER, channel_axis=None, used_by=uses[0].op_type if uses else "")
    for use in uses:
        role, axis = role_of_use(use, shape)
        if _STRENGTH[role] > _STRENGTH[best.role]:
            best = Assignment(role=role, channel_axis=axis, used_by=use.op_type,
                              block_axis=block_axis_of_use(use, shape),
                              block_trailing=use.op_type == "Conv")
    return best


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """What the policy needs to know about one tensor."""

    name: str
    dtype: str
    size: int
    role: Role
    used_by: str


@dataclass(frozen=True, kw_only=True)
class Skipped:
    """A tensor left as it is, and why (a row of the report's ``skipped``)."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class Selection:
    quantize: tuple[str, ...]
    skipped: tuple[Skipped, ...]


def _first_match(patterns: Iterable[str], name: str) -> str | None:
    return next((p for p in patterns if search(p, name)), None)


def skip_reason(tensor: Candidate, spec: QuantSpec) -> str | None:
    """Why ``tensor`` stays as it is under ``spec``, or ``None`` if it is quantized.

    In order: non-float tensors and inputs of an already-quantized graph are never quantized;
    ``exclude`` removes matching tensors; when ``include`` is given, only matching tensors are
    quantized, whatever their role and size; otherwise only weights of at least
    ``TINY_ELEMENTS`` elements. ``min_elements`` applies in both cases.
    """
    if tensor.dtype not in FLOAT_DTYPES:
        return f"not floating point ({tensor.dtype})"
    if tensor.size == 0:
        return "empty tensor"
    if tensor.role is Role.QUANTIZED:
        return f"already quantized (input of {tensor.used_by})"
    excluded = _first_match(spec.exclude, tensor.name)
    if excluded is not None:
        return f"excluded by pattern {excluded!r}"
    if tensor.size < spec.min_elements:
        return f"{tensor.size} elements, fewer than min_elements={spec.min_elements}"
    if spec.include:
        if _first_match(spec.include, tensor.name) is None:
            return "not matched by include"
        return None
    if tensor.role is Role.BIAS:
        return "bias"
    if tensor.role is Role.NORM:
        return f"normalisation parameter (of {tensor.used_by})"
    if tensor.role is Role.OTHER:
        used = f"input of {tensor.used_by}" if tensor.used_by else "unused"
        return f"not a weight ({used})"
    if tensor.size < TINY_ELEMENTS:
        return f"tiny: {tensor.size} elements, fewer than {TINY_ELEMENTS}"
    return None


def select(tensors: Iterable[Candidate], spec: QuantSpec) -> Selection:
    """Split ``tensors`` into the names to quantize and the skipped ones with their reasons."""
    quantize: list[str] = []
    skipped: list[Skipped] = []
    for tensor in tensors:
        reason = skip_reason(tensor, spec)
        if reason is None:
            quantize.append(tensor.name)
        else:
            skipped.append(Skipped(name=tensor.name, reason=reason))
    return Selection(quantize=tuple(quantize), skipped=tuple(skipped))


def select_weights(tensors: Sequence[Candidate], spec: QuantSpec) -> Selection:
    """``select``, raising ``NoWeightsError`` (with every reason) when nothing is quantized."""
    selection = select(tensors, spec)
    if not selection.quantize:
        shown = "; ".join(f"{s.name}: {s.reason}" for s in selection.skipped[:5])
        more = len(selection.skipped) - 5
        if more > 0:
            shown += f"; and {more} more"
        raise NoWeightsError(
            f"no floating-point weight to quantize among {len(tensors)} tensors"
            + (f" ({shown})" if shown else ""),
            details=[s.to_dict() for s in selection.skipped],
        )
    return selection
