"""Quantize a set of tensors at one granularity: the core's entry point for the pipeline.

Seed 001 Algorithm 1 per group (normalise, choose xmax, quantize, denormalise, measure), with
the groups of seed 002's layer-wise scheme:

- ``model``: one quantizer for all tensors that share a ``QuantizerSpec`` (as in the papers):
  moments merged across those tensors, one xmax, one design;
- ``layer``: one per tensor;
- ``channel``: one per slice along ``TensorRequest.channel_axis`` (the output channel):
  per-channel mean/std and xmax, vectorised over blocks of channels; the family's design is
  shared (the exponential family fits one codebook to all channels' normalised weights). A
  tensor without a channel axis (a bias, say) is quantized per layer, with a note.

The support threshold comes from ``quantcore.compress.thresholds`` on a sample of the normalised
weights (every weight up to ``SAMPLE_LIMIT``, else a fixed-seed uniform sample plus the
extremes, so wmax/abs_wmin/max_abs are exact and percentile is estimated on ~1M weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from quantcore.compress.gptq import gptq_groups
from quantcore.compress.groups import block_view, group_report_fields, quantize_groups
from quantcore.compress.normalize import (
    ChannelMoments,
    Normalization,
    channel_moments,
    channel_normalization,
    channel_sample,
    check_tensor,
    normalization,
    normalized_sample,
    tensor_moments,
)
from quantcore.compress.results import LayerReport, TensorRequest, TensorResult
from quantcore.compress.theory_sqnr import group_theory_db
from quantcore.compress.thresholds import (
    DATA_FREE,
    channel_thresholds,
    layer_threshold,
    support_of,
)
from quantcore.errors import InvalidSpecError
from quantcore.quantizers import Design, design
from quantcore.quantizers.stats import Moments, code_entropy_bits, levels_used, sqnr_db
from quantcore.quantizers.stream import StreamResult, encode_tensor
from quantcore.spec import DEFAULT_GROUP_SIZE, Granularity, Method, QuantizerSpec
from quantcore.spec_defaults import auto_group_size

SAMPLE_LIMIT = 1 << 20


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """A group's quantizer: its design, normalisation and threshold(s)."""

    design: Design
    norm: Normalization
    xmax: float | np.ndarray
    notes: tuple[str, ...]


def _sample_limit(spec: QuantizerSpec) -> int:
    """How many normalised weights the support rule and the design read (0: the extremes)."""
    if support_of(spec) in DATA_FREE and spec.method is not Method.LOG:
        return 0
    return SAMPLE_LIMIT


def _plan(spec: QuantizerSpec, norm: Normalization, sample: np.ndarray) -> _Plan:
    found = layer_threshold(spec, sample)
    chosen = design(spec, sample / found.xmax)
    return _Plan(design=chosen, norm=norm, xmax=found.xmax, notes=found.notes + chosen.notes)


def _channel_plan(
    spec: QuantizerSpec, norm: Normalization, sample: np.ndarray
) -> _Plan:
    found = channel_thresholds(spec, sample)
    chosen = found.shared or design(spec, sample / found.xmax[:, None])
    return _Plan(design=chosen, norm=norm, xmax=found.xmax, notes=found.notes + chosen.notes)


def _report(
    req: TensorRequest, moments: Moments, plan: _Plan, out: StreamResult,
    theory_db: float | None,
) -> LayerReport:
    spec = req.quantizer
    n = req.weights.size
    xmax = np.asarray(plan.xmax, np.float64)
    return LayerReport(
        name=req.name,
        shape=tuple(int(s) for s in req.weights.shape),
        params=int(n),
        dtype=str(req.weights.dtype),
        method=spec.method.value,
        bits=spec.bits,
        xmax=float(xmax.mean()),
        xmax_abs=float((xmax * np.asarray(plan.norm.scale, np.float64)).max()),
        support=support_of(spec).value,
        mean=moments.mean,
        std=moments.std,
        wmin=moments.minimum,
        wmax=moments.maximum,
        within_support_pct=100.0 * out.inside / n,
        levels_used=levels_used(out.counts),
        entropy_bits=code_entropy_bits(out.counts),
        sqnr_db=sqnr_db(moments.mean_square, out.noise / n),
        sqnr_theory_db=theory_db,
    )


def _encode(req: TensorRequest, plan: _Plan, axis: int | None) -> StreamResult:
    step = np.asarray(plan.design.unit(plan.xmax)) * np.asarray(plan.norm.scale)
    return encode_tensor(req.weights, plan.design, step=step, centre=plan.norm.centre, axis=axis)


def _run_group(
    requests: Sequence[TensorRequest], moments: Sequence[Moments]
) -> list[TensorResult]:
    """One quantizer for ``requests`` (one tensor for ``layer``, several for ``model``)."""
    spec = requests[0].quantizer
    merged = Moments()
    for m in moments:
        merged = merged.merge(m)
    norm = normalization(merged, normalize=spec.normalize)
    total = max(merged.count, 1)
    limit = _sample_limit(spec)
    parts = [
        normalized_sample(r.weights, norm, m, limit=limit and max(1, limit * m.count // total))
        for r, m in zip(requests, moments, strict=True)
    ]
    plan = _plan(spec, norm, np.concatenate(parts))
    results = []
    for req, m in zip(requests, moments, strict=True):
        out = _encode(req, plan, None)
        scale = float(norm.scale)
        sigma = np.array([m.std / scale if scale > 0 else 0.0])
        theory_db = group_theory_db(spec, plan.design, plan.xmax, sigma, np.ones(1), m.count)
        notes = plan.notes + _dtype_notes(req)
        if scale == 0.0:
            notes += ("constant weights: every weight decodes to their common value",)
        results.append(
            TensorResult(
                name=req.name, quantized=out.quantized,
                report=_report(req, m, plan, out, theory_db), counts=out.counts, notes=notes,
            )
        )
    return results


def _run_channels(req: TensorRequest, axis: int) -> TensorResult:
    spec = req.quantizer
    cm: ChannelMoments = channel_moments(req.name, req.weights, axis)
    norm = channel_normalization(cm, normalize=spec.normalize)
    sample = channel_sample(req.weights, axis, norm, cm, limit=_sample_limit(spec))
    plan = _channel_plan(spec, norm, sample)
    out = _encode(req, plan, axis)
    scale = np.asarray(norm.scale)
    std = np.sqrt(cm.m2 / cm.count)
    sigma = np.where(scale > 0, std / np.where(scale > 0, scale, 1.0), 0.0)
    theory_db = group_theory_db(spec, plan.design, plan.xmax, sigma, scale * scale, cm.count)
    report = dataclasses.replace(
        _report(req, cm.total(), plan, out, theory_db), granularity=Granularity.CHANNEL.value
    )
    notes = plan.notes + _dtype_notes(req)
    constant = int(np.count_nonzero(scale == 0))
    if constant:
        notes += (f"{constant} constant channel(s): their weights decode to their own value",)
    return TensorResult(
        name=req.name, quantized=out.quantized, report=report, counts=out.counts, notes=notes
    )


def _dtype_notes(req: TensorRequest) -> tuple[str, ...]:
    dtype = req.weights.dtype
    if dtype == np.float32:
        return ()
    compute = "float64" if dtype == np.float64 else "float32"
    return (f"{dtype} weights: quantized in {compute}, dequantized weights are float32",)


def _channel_axis(req: TensorRequest) -> int | None:
    return _axis(req, req.channel_axis, "channel_axis")


def _axis(req: TensorRequest, axis: int | None, field: str) -> int | None:
    """``axis`` of ``req``'s weights made non-negative; None for tensors of rank below 2."""
    if axis is None or req.weights.ndim < 2:
        return None
    if not -req.weights.ndim <= axis < req.weights.ndim:
        raise InvalidSpecError(
            f"{field}={axis} is out of range for tensor {req.name!r} of shape "
            f"{req.weights.shape}"
        )
    return axis % req.weights.ndim


def _block_axis(req: TensorRequest) -> int | None:
    """The axis ``req``'s blocks run along: the one its operator sums over, else the last."""
    ndim = req.weights.ndim
    if ndim == 0:
        return None
    if req.block_axis is None:
        return ndim - 1
    return _axis(req, req.block_axis, "block_axis") if ndim >= 2 else 0


def _run_blocks(req: TensorRequest, group_size: int, zero_point: bool) -> TensorResult | None:
    """``req`` in blocks along its block axis; None for a scalar, or weights that overflow
    float16 scales."""
    axis = _block_axis(req)
    if axis is None:
        return None
    shape = tuple(int(d) for d in req.weights.shape)
    spec = req.quantizer
    try:
        outcome = quantize_groups(
            req.name, req.weights, spec, view=block_view(shape, axis, req.block_trailing),
            axis=axis, block_size=group_size, zero_point=zero_point,
        )  # fmt: skip
    except OverflowError:
        return None
    notes = _dtype_notes(req)
    if req.stats is not None:
        outcome, note = gptq_groups(
            req.name, req.weights, spec, req.stats, view=block_view(shape, axis,
            req.block_trailing), axis=axis, block_size=group_size, zero_point=zero_point,
            plain=outcome,
        )  # fmt: skip
        notes += (note,)
    report = LayerReport(
        name=req.name, shape=tuple(int(s) for s in req.weights.shape),
        params=int(req.weights.size), dtype=str(req.weights.dtype), method=spec.method.value,
        bits=spec.bits, xmax=outcome.xmax, xmax_abs=outcome.xmax_abs,
        support=support_of(spec).value, sqnr_theory_db=outcome.theory_db,
        granularity=Granularity.GROUP.value, group_size=group_size,
        **group_report_fields(outcome, req.weights, req.name),
    )  # fmt: skip
    return TensorResult(name=req.name, quantized=outcome.quantized, report=report,
                        counts=outcome.counts, notes=notes)  # fmt: skip


def _per_channel(req: TensorRequest) -> TensorResult:
    """``req`` per channel, or per layer (with a note) when it has no channel axis."""
    axis = _channel_axis(req)
    if axis is not None:
        return _run_channels(req, axis)
    (res,) = _run_group([req], [tensor_moments(req.name, req.weights)])
    return dataclasses.replace(res, notes=(*res.notes, "no channel axis: quantized per layer"))


def quantize_tensors(
    requests: Sequence[TensorRequest],
    granularity: Granularity,
    progress: Callable[[float], None] | None = None,
    *,
    group_size: int = DEFAULT_GROUP_SIZE,
    zero_point: bool = True,
) -> list[TensorResult]:
    """Quantize every request at ``granularity``; results in the order of ``requests``.

    Every tensor is validated first (``InvalidTensorError`` for empty tensors, NaN/Inf,
    non-float dtypes). ``progress`` receives the share of weights done, in [0, 1], after
    each group.
    """
    requests = [dataclasses.replace(r, quantizer=r.quantizer.resolved()) for r in requests]
    for req in requests:
        check_tensor(req.name, req.weights)
    total = max(sum(r.weights.size for r in requests), 1)
    done = 0
    results: dict[int, TensorResult] = {}

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(min(1.0, done / total))

    if granularity is Granularity.CHANNEL:
        for i, req in enumerate(requests):
            results[i] = _per_channel(req)
            advance(req.weights.size)
        return [results[i] for i in range(len(requests))]
    if granularity in (Granularity.GROUP, Granularity.AUTO):
        for i, req in enumerate(requests):
            size = group_size
            if granularity is Granularity.AUTO:
                size = req.group_size or auto_group_size(req.quantizer.bits)
            grouped = _run_blocks(req, size, zero_point)
            if grouped is None:
                fallback = _per_channel(req)
                grouped = dataclasses.replace(fallback, notes=(
                    *fallback.notes, "a scalar, or weights past float16's range: per channel"
                ))  # fmt: skip
            results[i] = grouped
            advance(req.weights.size)
        return [results[i] for i in range(len(requests))]

    moments = [tensor_moments(r.name, r.weights) for r in requests]
    # model: tensors with equal specs share a quantizer; layer: each tensor is its own group.
    groups: dict[object, list[int]] = {}
    for i, req in enumerate(requests):
        key: object = req.quantizer if granularity is Granularity.MODEL else i
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        group_results = _run_group([requests[i] for i in members], [moments[i] for i in members])
        for i, res in zip(members, group_results, strict=True):
            if granularity is Granularity.MODEL:
                res = dataclasses.replace(
                    res, report=dataclasses.replace(res.report, granularity=granularity.value)
                )
            results[i] = res
        advance(sum(requests[i].weights.size for i in members))
    return [results[i] for i in range(len(requests))]
