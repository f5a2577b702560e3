"""The shapes of ``GET /v1/jobs/{id}/report``, one model per job kind, for the OpenAPI document.

The report is built by the core (``run_job`` writes it as the job's ``report.json``) and served
as it was stored: these models document it and are not used to validate or serialize it.
Every object allows fields beyond those listed, so that additions do not break clients. Floats
that would be infinite or NaN are ``null`` (JSON has neither).

Only sweep and search reports carry ``kind``; a quantize report has none, so the union of the
three is not discriminated. A quantize report's ``timings`` carry ``report_s`` (drawing
``report.html``) besides ``load_s``, ``quantize_s``, ``evaluate_s``, ``write_s`` and ``total_s``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from quantcore import Granularity, Method, Rounding, Support


class _Open(BaseModel):
    """Every report object: fields beyond those listed are allowed."""

    model_config = ConfigDict(extra="allow")


class ReportModelInfo(_Open):
    """The input model: its file and what it holds."""

    format: Literal["onnx", "safetensors", "npz"] = Field(description="The model file's format.")
    sha256: str = Field(description="sha256 of the model file, hex.")
    size_bytes: int = Field(description="Size of the model file (without external data).")
    n_tensors: int = Field(description="Tensors in the model (weights and others).")
    n_params: int = Field(description="Elements over all those tensors.")


class ReportOverride(_Open):
    """A per-tensor override as applied: `match` and the quantizer fields it sets (any of
    the spec's `method`, `bits`, `rounding`, `support`, `support_value`,
    `normalize`, `deadzone_ratio`, `mu`, `exponent_bits`, `mantissa_bits`)."""

    match: str = Field(description="Regular expression on tensor names; the last match wins.")


class AppliedSpec(_Open):
    """A quantize spec as applied, every default filled in (the fields' meanings, ranges and
    defaults: `GET /v1/quantizers`)."""

    method: Method = Field(description="Quantizer family.")
    bits: int = Field(description="Bits per weight (for `float`: 1 + exponent + mantissa bits).")
    rounding: Rounding = Field(description="Uniform quantizer's rounding: midrise or midtread.")
    support: Support = Field(description="Support-region threshold rule (the method's default "
                             "when none was given).")
    support_value: float | None = Field(
        description="The threshold for `value`, the percentile for `percentile`; else null."
    )
    normalize: bool = Field(description="Whether weights are normalised (mean, std) first.")
    deadzone_ratio: float = Field(description="Dead-zone quantizer's sigma.")
    mu: float = Field(description="mu-law compander's mu.")
    exponent_bits: int = Field(description="Minifloat exponent bits.")
    mantissa_bits: int = Field(description="Minifloat mantissa bits.")
    granularity: Granularity = Field(
        description="One quantizer per model, layer, channel or group; auto: groups sized by "
        "the bits."
    )
    include: list[str] = Field(description="Only tensors matching one of these are quantized "
                               "(empty: the default policy).")
    exclude: list[str] = Field(description="Tensors matching one of these are not quantized.")
    min_elements: int = Field(description="Smaller tensors are not quantized.")
    keep_small: float = Field(description="Share of the quantized weights' bytes the smallest "
                              "weights may add by staying in float (0: none).")
    overrides: list[ReportOverride] = Field(description="Per-tensor quantizer changes.")
    entropy_coding: bool = Field(description="Whether model.qpack's codes are entropy coded.")
    group_size: int = Field(description="Weights per group, for granularity group.")
    zero_point: bool = Field(description="Group granularity: an integer zero point per group.")
    target: dict[str, float] | None = Field(
        default=None, description="Present when given: {weight_sqnr_db} or {bits_per_weight}, "
        "the goal that replaced bits (the report's `allocation` shows how it was met)."
    )
    rdoq: bool | Literal["trellis", "auto"] | None = Field(
        default=None, description="Present when codes were chosen for distortion plus rate: "
        "true (each code), \"trellis\" (the whole path, trellis-coded quantization), "
        "\"auto\" (the smaller of the two, scalar only where it saves 2%; the allocation "
        "says which)."
    )


class ReportSummary(_Open):
    """Model-wide figures, derived from the layers' rows."""

    quantized_tensors: int = Field(description="Tensors quantized (rows of `layers`).")
    quantized_params: int = Field(description="Weights in those tensors.")
    skipped_tensors: int = Field(description="Tensors left as they are (rows of `skipped`).")
    bits_per_weight: float | None = Field(
        description="Code width, mean over the quantized weights."
    )
    entropy_bits_per_weight: float | None = Field(
        description="Empirical entropy of the codes, bits per weight, mean over the quantized "
        "weights."
    )
    sqnr_db: float | None = Field(
        description="Measured SQNR over all quantized weights, dB; null when exact."
    )
    sqnr_theory_db: float | None = Field(
        description="Closed-form Laplacian SQNR pooled over the layers, dB; null when a layer "
        "has no closed form."
    )
    original_bytes: int = Field(description="The model file and its external data, bytes.")
    artifacts: dict[str, int] = Field(
        description="Artifact name to size in bytes (the quantized model, `model.qpack`)."
    )
    compression_ratio: float | None = Field(
        description="original_bytes / size of model.qpack; null without a package."
    )


class ReportLayer(_Open):
    """One quantized tensor and its quantizer."""

    name: str = Field(description="Tensor name.")
    shape: list[int] = Field(description="Tensor shape.")
    params: int = Field(description="Elements in the tensor.")
    dtype: str = Field(description="The tensor's NumPy dtype name (e.g. float32, float16).")
    method: Method = Field(description="Quantizer family used for this tensor.")
    bits: int = Field(description="Code width, bits.")
    xmax: float = Field(
        description="Support threshold in normalised units (standard deviations); per channel, "
        "the mean of the channels'."
    )
    xmax_abs: float = Field(
        description="Support threshold in the weights' units; per channel, the largest."
    )
    support: Support = Field(description="Threshold rule used.")
    mean: float = Field(description="Mean of the weights.")
    std: float = Field(description="Standard deviation (population) of the weights.")
    wmin: float = Field(description="Smallest weight.")
    wmax: float = Field(description="Largest weight.")
    within_support_pct: float = Field(
        description="Percentage of weights within the support region."
    )
    levels_used: int = Field(description="Distinct codes used.")
    entropy_bits: float = Field(description="Empirical entropy of the codes, bits per weight.")
    sqnr_db: float | None = Field(
        description="10·log10(mean(w²) / mean((w − ŵ)²)), dB; null when exact."
    )
    sqnr_theory_db: float | None = Field(
        description="Closed-form SQNR for a Laplacian of the layer's variance (per channel or "
        "block, each at its own), dB; a grid spanning its group's largest weight (support "
        "max_abs, every block) is taken given that weight, as nothing beyond it overloads; "
        "null where no closed form applies."
    )
    granularity: str = Field(
        description="What this tensor got: model, layer, channel or group (auto picks group)."
    )
    group_size: int | None = Field(description="Weights per scale, for granularity group.")
    notes: list[str] = Field(description="What happened to this tensor that the rest of the "
                             "row does not say (fallbacks, dtypes, constant channels).")
    container: str | None = Field(
        default=None,
        description="The runnable container of its codes in the quantized model (int4, uint4, "
        "int8, uint8, ...); codes of 2 or 3 bits sit in a 4-bit container.",
    )
    choice: str | None = Field(
        default=None,
        description="Granularity auto only: the block size it gave this tensor and why (the "
        "rule for its bits, or finer blocks for a first layer within the size budget).",
    )


class ReportSkipped(_Open):
    """A tensor left as it is."""

    name: str = Field(description="Tensor name.")
    reason: str = Field(description="Why it was not quantized.")


class ReportFit(_Open):
    """One distribution family fitted to the weights."""

    name: str = Field(description="Family (laplace, gaussian, logistic, cauchy, uniform, "
                      "gamma, exponential, alpha).")
    sse: float = Field(description="Sum of squared errors against the weights' histogram.")
    kld: float = Field(description="Kullback-Leibler divergence from the weights' histogram.")


class ReportDistribution(_Open):
    """Distribution families fitted to a pooled sample of the quantized tensors' original
    weights."""

    fits: list[ReportFit] = Field(description="Every family's fit.")
    best_sse: str = Field(description="Family with the smallest SSE.")
    best_kld: str = Field(description="Family with the smallest KLD.")


class ReportTopK(_Open):
    """Top-1 and top-5 accuracy, fractions."""

    top1: float = Field(description="Top-1 accuracy, a fraction.")
    top5: float = Field(description="Top-5 accuracy (top-k with k = min(5, classes)).")


class ReportAccuracy(_Open):
    """The quantized model against the float one on the evaluation set."""

    samples: int = Field(description="Samples evaluated.")
    fp32: ReportTopK | None = Field(description="The float model's accuracy; null without "
                                    "labels or without a scores output.")
    quantized: ReportTopK | None = Field(description="The quantized model's accuracy; null "
                                         "without labels or without a scores output.")
    top1_drop: float | None = Field(description="fp32 top-1 minus quantized top-1, a fraction; "
                                    "null without labels.")
    agreement: float | None = Field(description="Share of samples whose top-1 class is the "
                                    "same for both models; null without a scores output.")
    output_sqnr_db: float | dict[str, float | None] | None = Field(
        description="SQNR of the outputs, dB: a number for one float output, {output name: dB} "
        "for several; null where not finite (identical outputs)."
    )


class QuantizeTimings(_Open):
    """Seconds spent per step."""

    load_s: float = Field(description="Reading the model (and checking the dataset).")
    quantize_s: float = Field(description="Quantizing the weights.")
    evaluate_s: float = Field(description="Evaluating; 0 without a dataset.")
    write_s: float = Field(description="Writing the artifacts and report.json.")
    report_s: float = Field(description="Drawing the histograms and report.html.")
    total_s: float = Field(description="The whole job.")


class ReportRunnable(_Open):
    """How the runnable model stores its codes."""

    opset: int = Field(description="The written model's ai.onnx opset (21 where an older "
                       "model was converted for 4-bit containers).")
    notes: list[str] = Field(description="Conversions made, or refused and why.")


class AllocationLayer(_Open):
    """One tensor's share of a target's allocation."""

    name: str = Field(description="Tensor name.")
    step: float = Field(description="Its quantizer's step size (the common step, in float32).")
    bits: int = Field(description="Code width that covers its largest weight at that step.")
    entropy_bits: float = Field(description="Empirical entropy of its codes, bits per weight.")
    sqnr_db: float | None = Field(description="Its measured SQNR, dB; null when exact.")
    params: int = Field(description="Its weights.")


class RdoqChoice(_Open):
    """rdoq "auto": the probe tensors quantized and coded both ways at the target."""

    chosen: Literal["trellis", "scalar"] = Field(description="The mode applied (fewer bytes).")
    probe_tensors: int = Field(description="Whole tensors measured.")
    probe_weights: int = Field(description="Their weights.")
    trellis_bytes: int = Field(description="Their package sections with trellis-coded codes.")
    scalar_bytes: int = Field(description="Their package sections with scalar RDOQ codes.")


class ReportAllocation(_Open):
    """How a spec's `target` was met: one step size shared by every tensor."""

    target: dict[str, float] = Field(description="The goal, as given.")
    rdoq: bool = Field(description="Whether codes were chosen for distortion plus rate.")
    trellis: bool = Field(default=False, description="Whether by trellis-coded quantization "
                          "(codes on the grid of step, indices coded under their quantizer).")
    step: float = Field(description="The common step size the search chose.")
    model_step: float = Field(description="The Laplacian closed form's step that seeded it.")
    predicted: dict[str, float | None] = Field(
        description="weight_sqnr_db and bits_per_weight the search measured on its sample."
    )
    achieved: dict[str, Any] = Field(
        description="weight_sqnr_db and bits_per_weight of the whole tensors, met (whether "
        "the target holds), package_bits_per_weight (model.qpack's bytes × 8 / weights)."
    )
    notes: list[str] = Field(description="Tensors clipped at 16 bits, if any; rdoq auto's "
                             "choice in words.")
    rdoq_choice: RdoqChoice | None = Field(
        default=None, description="rdoq \"auto\" only: what each mode coded the probe in."
    )
    layers: list[AllocationLayer] = Field(description="Per tensor: step, bits, rate, SQNR.")


class QuantizeReport(_Open):
    """The report of a `quantize` job (it has no `kind` field)."""

    model: ReportModelInfo = Field(description="The input model.")
    spec: AppliedSpec = Field(description="The spec as applied, with defaults filled in.")
    summary: ReportSummary = Field(description="Model-wide figures.")
    layers: list[ReportLayer] = Field(description="One row per quantized tensor.")
    skipped: list[ReportSkipped] = Field(description="Tensors left as they are, and why.")
    distribution: ReportDistribution | None = Field(
        description="Fits to the quantized tensors' weights; null when they are constant."
    )
    accuracy: ReportAccuracy | None = Field(
        description="Evaluation against the float model; null without a dataset."
    )
    runnable: ReportRunnable = Field(description="The quantized model.onnx's opset.")
    allocation: ReportAllocation | None = Field(
        default=None, description="Present with a spec's `target`: the step sizes chosen."
    )
    timings: QuantizeTimings = Field(description="Seconds per step.")


class SweepSpecApplied(_Open):
    """A sweep spec: the base and grid as sent, and the number of points."""

    base: dict[str, Any] = Field(description="The base quantize spec, as sent.")
    grid: dict[str, list[Any]] = Field(description="Grid field to its values, as sent.")
    points: int = Field(description="Grid points (rows of the report).")


class SweepRow(_Open):
    """One measured spec: a sweep's grid point or a search's step."""

    point: dict[str, Any] = Field(
        description="What this row sets: the grid fields of the point (a search's "
        "mixed-precision steps: {\"layer_bits\": {tensor name: bits}})."
    )
    spec: AppliedSpec = Field(description="The whole spec as applied.")
    xmax: float | None = Field(
        description="Support threshold in standard deviations, mean over the quantized layers "
        "weighted by their parameters."
    )
    bits_per_weight: float | None = Field(description="As the summary's.")
    entropy_bits_per_weight: float | None = Field(description="As the summary's.")
    sqnr_db: float | None = Field(description="As the summary's.")
    sqnr_theory_db: float | None = Field(description="As the summary's.")
    package_bytes: int = Field(description="Size of model.qpack at this spec.")
    accuracy: ReportAccuracy | None = Field(description="Null without a dataset.")


class SweepTimings(_Open):
    """Seconds spent per step."""

    load_s: float = Field(description="Reading the model (and checking the dataset).")
    sweep_s: float = Field(description="Quantizing and evaluating every point.")
    report_s: float = Field(description="Drawing report.html.")
    total_s: float = Field(description="The whole job.")


class SweepReport(_Open):
    """The report of a `sweep` job: one row per grid point, in grid order."""

    kind: Literal["sweep"] = Field(description="The job kind.")
    model: ReportModelInfo = Field(description="The input model.")
    spec: SweepSpecApplied = Field(description="The sweep spec.")
    rows: list[SweepRow] = Field(description="One row per grid point.")
    timings: SweepTimings = Field(description="Seconds per step.")


class SearchSpecApplied(_Open):
    """A search spec with its defaults filled in."""

    base: dict[str, Any] = Field(description="The base quantize spec, as sent.")
    max_top1_drop: float = Field(description="The accuracy budget, a fraction.")
    candidates: dict[str, list[Any]] = Field(description="Grid of the uniform phase.")
    mixed_precision: bool = Field(description="Whether single layers were lowered afterwards.")


class SearchStep(SweepRow):
    """One evaluation on the search's path: a measured spec and how it fared."""

    action: str = Field(description="\"candidate\", \"sensitivity of <layer> at <n> bits\" or "
                        "\"lower <layer> to <n> bits\".")
    drop: float = Field(description="The drop the budget bounds: top-1 drop, or 1 − agreement "
                        "without labels.")
    within_budget: bool = Field(description="drop ≤ max_top1_drop.")
    chosen: bool = Field(description="Whether this is the chosen configuration.")


class SearchTimings(_Open):
    """Seconds spent per step."""

    load_s: float = Field(description="Reading the model and checking the dataset.")
    search_s: float = Field(description="Quantizing and evaluating every step.")
    report_s: float = Field(description="Drawing report.html.")
    total_s: float = Field(description="The whole job.")


class SearchReport(_Open):
    """The report of a `search` job: its path, and the chosen configuration's quantize report
    fields."""

    kind: Literal["search"] = Field(description="The job kind.")
    model: ReportModelInfo = Field(description="The input model.")
    spec: SearchSpecApplied = Field(description="The search spec.")
    criterion: Literal["top1", "agreement"] = Field(
        description="What the budget bounded: top-1 drop (with labels) or disagreement."
    )
    max_top1_drop: float = Field(description="The budget, a fraction.")
    met_budget: bool = Field(description="Whether any step stayed within the budget; if not, "
                             "the step with the smallest drop is chosen.")
    stopped_at_limit: bool = Field(description="Whether the evaluation cap stopped the search.")
    path: list[SearchStep] = Field(description="Every step, in order.")
    chosen_spec: AppliedSpec = Field(description="The chosen configuration's spec.")
    summary: ReportSummary = Field(description="The chosen configuration's summary.")
    layers: list[ReportLayer] = Field(description="The chosen configuration's layers.")
    skipped: list[ReportSkipped] = Field(description="Tensors left as they are, and why.")
    distribution: ReportDistribution | None = Field(
        description="Fits to the quantized tensors' weights; null when they are constant."
    )
    accuracy: ReportAccuracy = Field(
        description="The chosen configuration's evaluation (a search always has a dataset)."
    )
    timings: SearchTimings = Field(description="Seconds per step.")


class JobReport(RootModel[QuantizeReport | SweepReport | SearchReport]):
    """A job's report: by the job's kind, a quantize, sweep or search report (sweep and search
    reports carry `kind`; a quantize report does not)."""
