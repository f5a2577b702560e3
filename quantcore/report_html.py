"""``report.html``: one self-contained page (inline PNG figures, no external files or scripts).

What it shows, from the report dict (API.md's report, or a sweep/search report):

- the summary, the accuracy block and the per-layer table;
- histograms of each layer's weights before and after quantisation and of all layers
  together (seed 001's figures 4 to 7): the float weights as a density, the quantized weights
  as stems at their levels, height = share of weights on that level;
- for a sweep (``rows``): SQNR (measured and theoretical) and accuracy against the support
  threshold, one curve per (bits, granularity, method) (001's figures 8 to 10), and the
  rate-distortion curves, SQNR and top-1 against entropy bits per weight (004's);
- for a search (``path``): the steps it took and the one it chose.

Figures are drawn with matplotlib's Agg backend and embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from quantcore.quantized import decode

if TYPE_CHECKING:
    from quantcore.pipeline import CodedWeight, QuantizedModel

HIST_BINS = 101
# More distinct quantized values than this (per-channel scales) are binned like the floats.
MAX_STEMS = 64
MAX_HIST_PANELS = 8
HIST_SAMPLE = 1_000_000


@dataclass(frozen=True, kw_only=True)
class WeightHistogram:
    """One panel of the before/after figure.

    ``edges``/``counts``: the float weights' histogram; ``levels``/``level_counts``: how many
    weights sit on each quantized value (or, with more than ``MAX_STEMS`` distinct values,
    the quantized weights' histogram on the same bins, given at the bin centres).
    """

    name: str
    edges: np.ndarray
    counts: np.ndarray
    levels: np.ndarray
    level_counts: np.ndarray


def weight_histogram(name: str, original: np.ndarray, quantized: np.ndarray) -> WeightHistogram:
    """Histograms of one tensor before and after quantisation, over the range of both."""
    original = np.asarray(original, np.float32).ravel()
    quantized = np.asarray(quantized, np.float32).ravel()
    lo = float(min(original.min(), quantized.min()))
    hi = float(max(original.max(), quantized.max()))
    if hi <= lo:  # a constant tensor: one bin around its value
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(original, bins=HIST_BINS, range=(lo, hi))
    levels, level_counts = np.unique(quantized, return_counts=True)
    if levels.size > MAX_STEMS:
        level_counts, _ = np.histogram(quantized, bins=edges)
        levels = (edges[:-1] + edges[1:]) / 2
    return WeightHistogram(
        name=name, edges=edges, counts=counts, levels=levels, level_counts=level_counts
    )


def merged_histogram(name: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> WeightHistogram:
    """One histogram of several tensors together (the "all layers" panel)."""
    pairs = list(pairs)
    original = np.concatenate([np.asarray(a, np.float32).ravel() for a, _ in pairs])
    quantized = np.concatenate([np.asarray(b, np.float32).ravel() for _, b in pairs])
    return weight_histogram(name, original, quantized)


def model_histograms(qmodel: QuantizedModel) -> list[WeightHistogram]:
    """Before/after panels for the first ``MAX_HIST_PANELS - 1`` quantized tensors and one for
    all of them. A tensor over ``HIST_SAMPLE`` weights is sampled by rows (every k-th slice
    along axis 0, decoded on its own), so no whole dequantized copy is made; the figure's
    shape, not its counts, is what matters."""
    panels: list[WeightHistogram] = []
    pooled: list[tuple[np.ndarray, np.ndarray]] = []
    budget = max(1, HIST_SAMPLE // max(len(qmodel.weights), 1))
    for i, coded in enumerate(qmodel.weights):
        original, quantized = _sampled_rows(qmodel, coded)
        if i < MAX_HIST_PANELS - 1:
            panels.append(weight_histogram(coded.name, original, quantized))
        stride = max(1, original.size // budget)
        pooled.append((original[::stride], quantized[::stride]))
    if len(qmodel.weights) > 1:
        panels.append(merged_histogram("all quantized weights", pooled))
    return panels


def _sampled_rows(qmodel: QuantizedModel, coded: CodedWeight) -> tuple[np.ndarray, np.ndarray]:
    """(original, dequantized) of every k-th slice along axis 0, flattened."""
    codes = coded.codes
    original = np.asarray(qmodel.source.array(coded.name))
    if codes.ndim == 0 or codes.size <= HIST_SAMPLE:
        return original.reshape(-1), coded.dequantized().reshape(-1)
    row = codes.size // codes.shape[0]
    step = max(1, math.ceil(codes.shape[0] * row / HIST_SAMPLE))
    decoder = coded.decoder
    if decoder.axis == 0 and np.ndim(decoder.scale) > 0:
        decoder = dataclasses.replace(
            decoder,
            scale=np.asarray(decoder.scale)[::step],
            offset=np.asarray(decoder.offset)[::step]
            if np.ndim(decoder.offset)
            else decoder.offset,
        )
    quantized = decode(np.ascontiguousarray(codes[::step]), decoder)
    return original.reshape(codes.shape)[::step].reshape(-1), quantized.reshape(-1)


def render_report_html(report: dict[str, Any], histograms: Sequence[WeightHistogram] = ()) -> str:
    """The page for ``report``; ``histograms`` feed the before/after figure (may be empty)."""
    kind = report.get("kind", "quantize")
    parts = [f"<h1>Quantization report ({_e(kind)})</h1>"]
    model = report.get("model")
    if model:
        parts.append(_section("Model", _kv_table(model)))
    summary = report.get("summary")
    if summary:
        parts.append(_section("Summary", _kv_table(summary)))
    if report.get("accuracy"):
        parts.append(_section("Accuracy", _kv_table(_flat(report["accuracy"]))))
    if report.get("rows"):
        parts.append(_section("Sweep", _sweep_figures(report["rows"]) + _rows_table(report)))
    if report.get("path"):
        parts.append(_section("Search", _search_html(report)))
    if histograms:
        parts.append(_section("Weights before and after quantisation", _hist_figure(histograms)))
    if report.get("layers"):
        parts.append(_section("Layers", _records_table(report["layers"])))
    if report.get("skipped"):
        parts.append(_section("Left in float", _records_table(report["skipped"])))
    if report.get("spec"):
        parts.append(_section("Spec as applied", _kv_table(_flat(report["spec"]))))
    body = "\n".join(parts)
    return f"<!doctype html>\n<html><head><meta charset='utf-8'><title>Quantization report</title>\n<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"  # noqa: E501


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#f3f3f3}td.k{text-align:left;font-weight:600}"
    "tr.chosen td{background:#e6f4e6}img{max-width:100%}"
)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, dict | list):
        return _e(
            ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
            if isinstance(value, dict)
            else ", ".join(_fmt(v) for v in value)
        )
    return _e(value)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _section(title: str, content: str) -> str:
    return f"<h2>{_e(title)}</h2>\n{content}"


def _kv_table(data: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class='k'>{_e(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in data.items()
    )
    return f"<table>{rows}</table>"


def _records_table(records: Sequence[dict[str, Any]], highlight: int | None = None) -> str:
    keys = list(dict.fromkeys(k for r in records for k in r))
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = "".join(
        f"<tr{' class=chosen' if i == highlight else ''}>"
        + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in keys)
        + "</tr>"
        for i, r in enumerate(records)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img alt='figure' src='data:image/png;base64,{data}'>"


def _hist_figure(histograms: Sequence[WeightHistogram]) -> str:
    shown = list(histograms[:MAX_HIST_PANELS])
    cols = min(len(shown), 2)
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.2 * rows), squeeze=False)
    for ax, h in zip(axes.ravel(), shown, strict=False):
        total = max(int(h.counts.sum()), 1)
        widths = np.diff(h.edges)
        ax.bar(h.edges[:-1], h.counts / total, width=widths, align="edge", color="#9bb7d4")
        ax.set_ylabel("share per bin")
        ax2 = ax.twinx()
        ax2.vlines(h.levels, 0, h.level_counts / total, color="#c0392b", lw=2)
        ax2.plot(h.levels, h.level_counts / total, "o", color="#c0392b", ms=3)
        ax2.set_ylim(bottom=0)
        ax2.set_ylabel("share per level", color="#c0392b")
        ax.set_title(h.name, fontsize=10)
        ax.set_xlabel("weight")
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    proxies = [
        Patch(color="#9bb7d4"),
        Line2D([], [], color="#c0392b", marker="o", ms=3),
    ]
    fig.legend(
        proxies,
        ["float32 weights (share per bin)", "quantized (share per level)"],
        loc="upper center",
        ncol=2,
        bbox_to_anchor=(0.5, 1.04),
    )
    fig.tight_layout()
    note = ""
    if len(histograms) > MAX_HIST_PANELS:
        note = f"<p>First {MAX_HIST_PANELS} of {len(histograms)} panels shown.</p>"
    return _png(fig) + note


def _series_key(row: dict[str, Any]) -> str:
    point = row.get("point", {})
    spec = row.get("spec", {})
    bits = point.get("bits", spec.get("bits"))
    gran = point.get("granularity", spec.get("granularity"))
    method = point.get("method", spec.get("method"))
    return f"{bits}-bit {method}, {gran}"


def _sweep_figures(rows: Sequence[dict[str, Any]]) -> str:
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(_series_key(row), []).append(row)
    out = ""
    by_threshold = {k: [r for r in v if r.get("xmax") is not None] for k, v in series.items()}
    if any(len(v) > 1 for v in by_threshold.values()):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        for i, (name, pts) in enumerate(by_threshold.items()):
            pts = sorted(pts, key=lambda r: r["xmax"])
            color = f"C{i % 10}"
            x = [r["xmax"] for r in pts]
            ax1.plot(x, [_num(r.get("sqnr_db")) for r in pts], "o-", color=color, label=name)
            ax1.plot(
                x,
                [_num(r.get("sqnr_theory_db")) for r in pts],
                "--",
                color=color,
                label=f"{name} (theory, Laplacian)",
            )
            ax2.plot(x, [_top1(r) for r in pts], "o-", color=color, label=name)
        ax1.set(
            xlabel="support threshold xmax (std units)",
            ylabel="SQNR (dB)",
            title="SQNR against the support threshold",
        )
        ax2.set(
            xlabel="support threshold xmax (std units)",
            ylabel="top-1 accuracy (%)",
            title="Accuracy against the support threshold",
        )
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        out += _png(fig)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for i, (name, pts) in enumerate(series.items()):
        pts = sorted(pts, key=lambda r: _num(r.get("entropy_bits_per_weight")))
        x = [_num(r.get("entropy_bits_per_weight")) for r in pts]
        ax1.plot(x, [_num(r.get("sqnr_db")) for r in pts], "o", color=f"C{i % 10}", label=name)
        ax2.plot(x, [_top1(r) for r in pts], "o", color=f"C{i % 10}", label=name)
    ax1.set(xlabel="entropy (bits per weight)", ylabel="SQNR (dB)", title="Rate-distortion")
    ax2.set(
        xlabel="entropy (bits per weight)",
        ylabel="top-1 accuracy (%)",
        title="Accuracy against rate",
    )
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return out + _png(fig)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _top1(row: dict[str, Any]) -> float:
    """Quantized top-1 in percent; the agreement when the set has no labels."""
    acc = row.get("accuracy") or {}
    quant = acc.get("quantized") or {}
    value = quant.get("top1", acc.get("agreement"))
    return 100.0 * value if isinstance(value, int | float) else float("nan")


_ROW_COLUMNS = (
    "bits_per_weight",
    "entropy_bits_per_weight",
    "sqnr_db",
    "sqnr_theory_db",
    "package_bytes",
)


def _row_record(row: dict[str, Any]) -> dict[str, Any]:
    acc = row.get("accuracy") or {}
    record = {f"{k}": v for k, v in (row.get("point") or {}).items()}
    record.update({"xmax": row.get("xmax")})
    record.update({k: row.get(k) for k in _ROW_COLUMNS})
    record["top1"] = (acc.get("quantized") or {}).get("top1")
    record["top1_drop"] = acc.get("top1_drop")
    record["agreement"] = acc.get("agreement")
    return record


def _rows_table(report: dict[str, Any]) -> str:
    return _records_table([_row_record(r) for r in report["rows"]])


def _search_html(report: dict[str, Any]) -> str:
    path = report["path"]
    chosen = next((i for i, step in enumerate(path) if step.get("chosen")), None)
    records = [
        {"step": i, "action": s.get("action"), **_row_record(s), "within": s.get("within_budget")}
        for i, s in enumerate(path)
    ]
    intro = (
        f"<p>Budget: {_fmt(report.get('criterion'))} drop at most "
        f"{_fmt(report.get('max_top1_drop'))}. Chosen: step {_fmt(chosen)} "
        "(highlighted).</p>"
    )
    return intro + _records_table(records, highlight=chosen)


def write_report_html(report: dict[str, Any], qmodel: QuantizedModel | None, out_dir: Path) -> Path:
    """Write ``report.html`` for a job's report (histograms from ``qmodel`` when given)."""
    path = Path(out_dir) / "report.html"
    histograms = model_histograms(qmodel) if qmodel is not None else []
    path.write_text(render_report_html(report, histograms), encoding="utf-8")
    return path
