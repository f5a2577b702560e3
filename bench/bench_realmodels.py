"""Output fidelity against runnable size on real models, ours and the peers, in one run.

Runs ``bench.realmodels.baseline`` (every catalog model at 8, 6, 4 and 3 bits: our default
spec, the channel/max_abs spec, onnxruntime ``quantize_dynamic`` per tensor and per channel,
``MatMulNBitsQuantizer`` 4-bit blocks of 32 and 128, NNCF INT8/INT4 and a plain
round-to-nearest block-32 baseline), writes ``bench/results/bench_realmodels.json``, and draws
the size/fidelity plane to ``docs/figures/realmodels.svg``: one panel per bit width, runnable
size as a share of the float model against output SQNR, one marker per (model, method).

    python -m bench.bench_realmodels [--models a,b] [--bits 8,4]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.realmodels import baseline
from quantcore.report import svg as sp

RESULTS = Path("bench/results/bench_realmodels.json")
FIGURE = Path("docs/figures/realmodels.svg")
PANEL_W, PANEL_H = 520, 380
INSET = {"left": 64, "top": 30, "right": 20, "bottom": 50}
# Output SQNR is drawn up to this; an unchanged model (a peer that skips Conv) is "inf".
SQNR_CAP = 60.0


def _points(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, list[tuple[float, float]]]]:
    """By bit width, by method: (size % of float, output SQNR dB) of each model."""
    floats = {r["model"]: r["runnable_bytes"] for r in rows if r["method"] == "float"}
    out: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for r in rows:
        if r["method"] == "float" or r.get("status") != "ok":
            continue
        sqnr = r["sqnr_db"]
        value = SQNR_CAP if isinstance(sqnr, str) else min(float(sqnr), SQNR_CAP)
        size = 100.0 * r["runnable_bytes"] / floats[r["model"]]
        out.setdefault(int(r["bits"]), {}).setdefault(r["method"], []).append((size, value))
    return out


def figure(rows: Sequence[dict[str, Any]]) -> str:
    by_bits = _points(rows)
    methods = sorted({m for per in by_bits.values() for m in per})
    styles = {m: sp.style(i) for i, m in enumerate(methods)}
    panels = sorted(by_bits, reverse=True)
    cols = min(2, max(1, len(panels)))
    grid_rows = math.ceil(len(panels) / cols)
    width = cols * PANEL_W
    parts = []
    for i, bits in enumerate(panels):
        box = sp.Box(left=(i % cols) * PANEL_W, top=(i // cols) * PANEL_H,
                     width=PANEL_W, height=PANEL_H).inset(**INSET)  # fmt: skip
        series = [
            sp.Series(label=f"{m} ({bits} bits)", x=[p[0] for p in pts], y=[p[1] for p in pts],
                      color=styles[m][0], marker=styles[m][1], line=False)
            for m, pts in sorted(by_bits[bits].items())
        ]  # fmt: skip
        frame = sp.Frame.fit(box, x=sp.finite_range(*(s.x for s in series)),
                             y=sp.finite_range(*(s.y for s in series)), pad=10)  # fmt: skip
        panel = [sp.axes(frame, title=f"{bits} bits", x_label="runnable size (% of float)",
                         y_label=f"output SQNR (dB, capped at {SQNR_CAP:.0f})")]  # fmt: skip
        panel += [sp.plot(frame, s) for s in series]
        parts.append(sp.group(f"{bits} bits", *panel, kind="panel"))
    keys = [sp.Key(label=m, color=styles[m][0], marker=styles[m][1]) for m in methods]
    _, _, legend_h = sp.legend_size(keys, width - 40)
    top = grid_rows * PANEL_H
    parts.append(sp.legend(keys, sp.Box(left=20, top=top, width=width - 40, height=legend_h)))
    title = "Real models: output SQNR against runnable size"
    return sp.document(width, top + legend_h + 4, title, *parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated catalog names (default: all)")
    parser.add_argument("--bits", default="8,6,4,3")
    parser.add_argument("--cli-source", help="run the CLI from this copy of the code (see "
                        "bench.realmodels.baseline), e.g. a git archive of the commit measured")
    args = parser.parse_args(argv)
    forwarded = ["--out", str(RESULTS), "--bits", args.bits, "--budget-s", "3000"]
    if args.models:
        forwarded += ["--models", args.models]
    if args.cli_source:
        forwarded += ["--cli-source", args.cli_source]
    code = baseline.main(forwarded)
    rows = json.loads(RESULTS.read_text())["rows"]
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    FIGURE.write_text(figure(rows))
    print(f"figure: {FIGURE}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
