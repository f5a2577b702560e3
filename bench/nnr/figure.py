"""The rate–distortion figure of ``bench.bench_nnr``: per model, weight SQNR and output SQNR
against bits per weight (everything shipped, over the quantized weights), the reference's
QP sweep as a line, each of our methods as markers joined in order."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quantcore.report import svg as sp

FIGURE = Path("docs/figures/nnr.svg")
PANEL_W, PANEL_H = 440, 300
INSET = {"left": 60, "top": 30, "right": 16, "bottom": 46}
REFERENCE = "DeepCABAC (nncodec)"
PANELS = (("weight_sqnr_db", "pooled weight SQNR (dB)"), ("output_sqnr_db", "output SQNR (dB)"))


def _bpw(size: float, params: int) -> float:
    return 8.0 * size / params


def figure(rows: Sequence[dict[str, Any]], curves: Mapping[str, Sequence[dict[str, Any]]]) -> str:
    methods = [REFERENCE, *dict.fromkeys(r["method"] for r in rows)]
    styles = {m: sp.style(i) for i, m in enumerate(methods)}
    models = list(curves)
    parts = []
    for i, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        params = int(mine[0]["params"])
        ref = sorted(curves[model], key=lambda p: p["bytes"])
        for j, (key, label) in enumerate(PANELS):
            box = sp.Box(left=j * PANEL_W, top=i * PANEL_H, width=PANEL_W,
                         height=PANEL_H).inset(**INSET)
            ours = [r[key] for r in mine if math.isfinite(r[key])]
            lo = min(ours) - 4 if ours else -math.inf
            hi = max(ours) + 4 if ours else math.inf
            shown = [p for p in ref if lo <= p[key] <= hi]  # the reference near our points
            xs = [_bpw(p["bytes"], params) for p in shown]
            ys = [float(p[key]) for p in shown]
            series = [sp.Series(label=REFERENCE, x=xs, y=ys, color=styles[REFERENCE][0],
                                marker=styles[REFERENCE][1], size=2.5)]
            for method in methods[1:]:
                pts = sorted((r for r in mine if r["method"] == method), key=lambda r: r["bytes"])
                if pts:
                    x = [_bpw(r["bytes"], params) for r in pts]
                    y = [float(r[key]) for r in pts]
                    xs, ys = xs + x, ys + y
                    series.append(sp.Series(label=method, x=x, y=y, color=styles[method][0],
                                            marker=styles[method][1], dash="4 3"))
            frame = sp.Frame.fit(box, x=sp.finite_range(xs), y=sp.finite_range(ys), pad=8)
            panel = [sp.axes(frame, title=f"{model}: {label.split(' (')[0]}",
                             x_label="bits per weight (all bytes shipped)", y_label=label)]
            panel += [sp.plot(frame, s) for s in series]
            parts.append(sp.group(f"{model} {key}", *panel, kind="panel"))
    keys = [sp.Key(label=m, color=styles[m][0], marker=styles[m][1]) for m in methods]
    width = 2 * PANEL_W
    _, _, legend_h = sp.legend_size(keys, width - 40)
    top = len(models) * PANEL_H
    parts.append(sp.legend(keys, sp.Box(left=20, top=top, width=width - 40, height=legend_h)))
    return sp.document(width, top + legend_h + 4, "model.qpack against DeepCABAC", *parts)
