"""What each tensor of a model does, and which tensors the default policy quantizes.

A tensor's role comes from the operators that consume it (the input slot it fills):

- ``weight``: the weight of ``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul``, the recurrent
  matrices of ``LSTM``/``GRU``/``RNN``, any input of ``Einsum``, the weights of
  ``com.microsoft`` ``Attention`` (query, key and value of the ONNX one) and embedding
  tables (data of ``Gather``);
- ``bias``: the bias slot of those operators, or a vector added by ``Add``;
- ``norm``: parameters of ``BatchNormalization`` and the other normalisation operators;
- ``quantized``: an input of an operator of an already-quantized graph (``DequantizeLinear``,
  ``QLinearConv``, ``MatMulInteger``, ...), left alone;
- ``other``: anything else (``Resize`` scales, ``Clip`` bounds, constants of arithmetic).

A tensor used by several nodes takes the strongest role (``quantized`` over ``weight`` over
``bias`` over ``norm`` over ``other``). A consumer may be reached through layout operators
(``Slice``, ``Concat``, ``Transpose``, ... as found by ``quantcore.formats.onnx_uses``): it
counts as a direct one, its ``Layout`` mapping the axes below back to the tensor's own (``None``
where they cannot be mapped), and ``used_by`` says so (``LSTM via Slice, Concat``). A
``Gather`` with constant indices is such a layout operator; only when nothing past it gives a
role does it count as an embedding table. ``channel_axis`` is the axis of the output channels of
a weight (0 for ``Conv``; 1 for ``ConvTranspose``; for ``Gemm`` it follows ``transB``; the last
axis of a ``MatMul`` right operand), or ``None`` where no such axis exists. ``block_axis`` is
the axis the operator sums over (Conv: input channels, and with ``block_trailing`` the window
after them; MatMul: K; Gemm: by ``transB``; recurrent matrices and embedding tables: the
last), along which granularity ``group`` puts its blocks.

The default policy (``select``) quantizes floating-point weights of at least
``TINY_ELEMENTS`` elements, but for the smallest of them (``quantcore.formats.small_weights``,
the spec's ``keep_small``); the spec's ``include``, ``exclude`` and ``min_elements`` change
that as documented on ``skip_reason``. Every tensor left in float gets a reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from quantcore.checks import search
from quantcore.errors import NoWeightsError
from quantcore.formats.small_weights import FLOAT_BYTES, kept_small
from quantcore.spec import QuantSpec

# Tensors below this many elements stay in float by default: the scale and offset of a
# quantizer would cost about as much as the tensor itself.
TINY_ELEMENTS = 16

FLOAT_DTYPES = frozenset(FLOAT_BYTES)


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
class Layout:
    """How a tensor reaches a consumer through layout operators: the operators, the shape the
    consumer sees (-1 for a size not known, ``None`` for a rank not known) and for each of its
    axes the tensor's axis it comes from (``None``: not known; the whole map ``None`` when
    nothing is known)."""

    ops: tuple[str, ...]
    shape: tuple[int, ...] | None
    axes: tuple[int | None, ...] | None


@dataclass(frozen=True, kw_only=True)
class Use:
    """One consumer of a tensor: the operator, the input slot and the attributes that matter;
    ``layout`` when the tensor reaches it through layout operators, ``fallback`` for a use that
    counts only when no other gives a role."""

    op_type: str
    slot: int
    trans_a: bool = False
    trans_b: bool = False
    domain: str = ""
    layout: Layout | None = None
    fallback: bool = False

    @property
    def label(self) -> str:
        """The operator, and the layout operators passed on the way (``LSTM via Slice``)."""
        if self.layout is None:
            return self.op_type
        return f"{self.op_type} via {', '.join(dict.fromkeys(self.layout.ops))}"


@dataclass(frozen=True, kw_only=True)
class Assignment:
    role: Role
    channel_axis: int | None
    used_by: str  # the use that decided the role, ``Use.label`` ("" when unused)
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
    if op == "Einsum":
        return Role.WEIGHT, None
    if op == "Attention":
        if use.domain == "com.microsoft":  # input, weights (in, 3 * hidden), bias, ...
            return {1: (Role.WEIGHT, 1), 2: (Role.BIAS, None)}.get(slot, (Role.OTHER, None))
        if slot in (0, 1, 2):  # query, key, value; the mask and past states are not weights
            return Role.WEIGHT, None
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
    if op == "Attention" and use.domain == "com.microsoft" and slot == 1:
        return 0
    return None


def assign(uses: Sequence[Use], shape: Sequence[int]) -> Assignment:
    """The strongest role among ``uses``; the first use with that role sets the axes. Uses
    marked ``fallback`` count only if the others give no role but ``other``."""
    firm = [use for use in uses if not use.fallback]
    best = _strongest(firm, shape, firm[0].label if firm else "")
    if best.role is Role.OTHER:
        spare = _strongest([use for use in uses if use.fallback], shape, best.used_by)
        if spare.role is not Role.OTHER:
            return spare
    return best


def _strongest(uses: Sequence[Use], shape: Sequence[int], label: str) -> Assignment:
    best = Assignment(role=Role.OTHER, channel_axis=None, used_by=label)
    for use in uses:
        assignment = assign_use(use, shape)
        if _STRENGTH[assignment.role] > _STRENGTH[best.role]:
            best = assignment
    return best


def assign_use(use: Use, shape: Sequence[int]) -> Assignment:
    """What one use makes of a tensor of this ``shape``, its axes mapped back through the
    use's layout: the shape the consumer sees decides, unknown sizes counted as above 1."""
    layout = use.layout
    seen = tuple(shape) if layout is None or layout.shape is None else layout.shape
    seen = tuple(2 if d < 0 else d for d in seen)
    role, channel = role_of_use(use, seen)
    block = block_axis_of_use(use, seen)
    trailing = use.op_type == "Conv"
    if layout is not None:
        axes = layout.axes
        # A Conv's window still follows its input channels when the axes after them map
        # onto the tensor's last axes, in order.
        if trailing and block is not None and axes is not None:
            start = axes[block]
            trailing = start is not None and axes[block:] == tuple(range(start, len(shape)))
        channel, block = _source_axis(axes, channel), _source_axis(axes, block)
        trailing = trailing and block is not None
    return Assignment(role=role, channel_axis=channel, used_by=use.label, block_axis=block,
                      block_trailing=trailing)  # fmt: skip


def _source_axis(axes: tuple[int | None, ...] | None, axis: int | None) -> int | None:
    return None if axes is None or axis is None else axes[axis]


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
    """Split ``tensors`` into the names to quantize and the skipped ones with their reasons
    (``skip_reason``, then the smallest weights kept in float: ``small_weights``)."""
    tensors = list(tensors)
    reasons = {t.name: skip_reason(t, spec) for t in tensors}
    reasons.update(kept_small([t for t in tensors if reasons[t.name] is None], spec))
    quantize: list[str] = []
    skipped: list[Skipped] = []
    for tensor in tensors:
        reason = reasons[tensor.name]
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
