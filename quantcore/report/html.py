"""``report.html``: one self-contained page (inline SVG figures, no external files or scripts).

What it shows, from the report dict (the report of docs/api.md, or a sweep/search report):

- the summary, the accuracy block and the per-layer table;
- histograms of the weights before and after quantisation, of the largest layers (at most
  ``MAX_LAYER_PANELS``, named above the figure) and of all layers together (seed 001's
  figures 4 to 7): the float weights as a density, the quantized weights as stems at their
  levels, height = share of weights on that level;
- for a sweep (``rows``): SQNR (measured and theoretical) and accuracy against the support
  threshold, one curve per (bits, granularity, method) (001's figures 8 to 10), and the
  rate-distortion curves, SQNR and top-1 against entropy bits per weight (004's);
- for a search (``path``): size against drop for every step, and the steps in a table with
  the chosen one highlighted.

The figures come from ``quantcore.report.figures``, as inline ``<svg>`` elements.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from quantcore.report.figures import search_figure, sweep_figures
from quantcore.report.histograms import MAX_LAYER_PANELS, HistogramPanel, hist_figure

__all__ = ["render_report_html"]


def render_report_html(report: dict[str, Any], histograms: Sequence[HistogramPanel] = ()) -> str:
    """The page for ``report``; ``histograms`` feed the before/after figure (may be empty)."""
    kind = report.get("kind", "quantize")
    parts = [f"<h1>Quantization report ({_e(kind)})</h1>"]
    model = report.get("model")
    if model:
        parts.append(_section("Model", _kv_table(model)))
    summary = report.get("summary")
    if summary:
        parts.append(_section("Summary", _kv_table(summary)))
    allocation = report.get("allocation")
    if allocation:  # a spec's target: the common step, what it achieved, per tensor
        head = _flat({k: v for k, v in allocation.items() if k != "layers"})
        parts.append(_section("Rate–distortion allocation", _kv_table(head)
                              + _records_table(allocation.get("layers") or [])))
    if report.get("accuracy"):
        parts.append(_section("Accuracy", _kv_table(_flat(report["accuracy"]))))
    if report.get("rows"):
        parts.append(_section("Sweep", sweep_figures(report["rows"]) + _rows_table(report)))
    if report.get("path"):
        parts.append(_section("Search", _search_html(report)))
    if histograms:
        caption = _hist_caption(histograms, len(report.get("layers") or ()))
        parts.append(
            _section("Weights before and after quantisation", caption + hist_figure(histograms))
        )
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
    "tr.chosen td{background:#e6f4e6}svg{display:block;max-width:100%;height:auto;margin:.5em 0}"
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


def _hist_caption(histograms: Sequence[HistogramPanel], tensors: int) -> str:
    """Which tensors have a panel: with many layers only the largest do."""
    names = ", ".join(h.name for h in histograms)
    text = f"Panels: {names}."
    if tensors > MAX_LAYER_PANELS:
        text += (
            f" Only the {MAX_LAYER_PANELS} largest of the {tensors} quantized tensors have a "
            "panel of their own; the pooled panel covers them all."
        )
    return f"<p>{_e(text)}</p>"


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
    figure = search_figure(path, report.get("max_top1_drop"))
    return intro + figure + _records_table(records, highlight=chosen)
