"""model.qpack against MPEG NNR's reference coder (DeepCABAC, ``nncodec``) at equal distortion.

For each real model of ``bench/realmodels`` and each of our specs, ``model.qpack``'s bytes are
set against the bytes DeepCABAC needs for the same pooled weight SQNR, and for the same output
SQNR on the model's realistic inputs: the reference is swept over its QP (1.5 dB a step) and its
rate–distortion curve interpolated at our points (``bench.nnr.measure``). Both sides count
everything shipped: our package (codes, scales, the zstd skeleton of the rest), the reference's
bitstream plus the same zstd of the model's untouched rest. Ratio = ours / reference (below 1:
ours smaller). Each point also has its decoding speed in weights per CPU second: ours the
package's code sections decoded on one thread, the reference's ``nnc.decompress`` of its
bitstream at the QP nearest in weight SQNR, timed alternately in the same minutes
(``bench.nnr.measure.decode_alternately``); and, as a baseline of our own in the same runs,
the package decoded by the scalar kernels alone (``scalar``: no vector decoder, as on a CPU
without AVX2).

Methods (``--methods``):

- ``layer-mse``: ``{"bits": B, "granularity": "layer", "support": "mse", "keep_small": 0}``, B
  in ``--bits`` (midrise levels, the measured-MSE support of each layer, order-0 coded; every
  selected weight, the smallest too, as the reference codes them);
- ``target``: ``{"target": {"weight_sqnr_db": S}}`` at the SQNR S that ``layer-mse`` reached at
  each B (rate–distortion allocation, ``quantcore.compress.allocate``);
- ``target-rdoq``: the same with ``"rdoq": true``;
- ``target-trellis``: the same with ``"rdoq": "trellis"`` (trellis-coded quantization,
  ``quantcore.compress.trellis``, coded by stream v5);
- ``target-auto``: the same with ``"rdoq": "auto"`` (the smaller of the two, measured per job).

``python -m bench.bench_nnr [--models a,b] [--bits 2,3,4,5,6,8] [--methods ...]``; writes
``bench/results/bench_nnr.json`` and ``docs/figures/nnr.svg``. The first run builds nncodec from
its source distribution into a cache (``bench.nnr.reference``), about 3 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import write_results
from bench.nnr import reference
from bench.nnr.figure import FIGURE, figure
from bench.nnr.measure import Point, Subject, bytes_at, decode_alternately
from bench.realmodels.catalog import get

DEFAULT_MODELS = "ocr-rec,ocr-det,nudenet,magika,orientation"
DEFAULT_BITS = "2,3,4,5,6,8"
DEFAULT_METHODS = "layer-mse,target,target-rdoq,target-trellis,target-auto"


def _specs(
    method: str, bits: Sequence[int], anchors: dict[int, float]
) -> list[tuple[str, dict[str, Any]]]:
    if method == "layer-mse":
        return [(f"{b} bits", {"bits": b, "granularity": "layer", "support": "mse",
                               "keep_small": 0}) for b in bits]
    choices: dict[str, dict[str, Any]] = {"target-rdoq": {"rdoq": True},
                                          "target-trellis": {"rdoq": "trellis"},
                                          "target-auto": {"rdoq": "auto"}}
    rdoq = choices.get(method, {})
    return [(f"{anchors[b]:.1f} dB", {"target": {"weight_sqnr_db": round(anchors[b], 2)}, **rdoq})
            for b in bits if b in anchors and math.isfinite(anchors[b])]


def _row(
    model: str, method: str, p: Point, ref: list[Point], extra: dict[str, Any], params: int
) -> dict[str, Any]:
    at_w = bytes_at(ref, p.weight_sqnr_db, "weight_sqnr_db")
    at_o = bytes_at(ref, p.output_sqnr_db, "output_sqnr_db")
    # Decoding speed, weights per CPU second: ours, and the reference's at its QP nearest
    # in weight SQNR: timed in the same runs as ours where the point has those timings.
    near = _nearest(ref, p)
    ref_s = p.ref_decode_s or near.decode_s
    ours = params / p.decode_s / 1e6 if p.decode_s else None
    scalar = params / p.decode_scalar_s / 1e6 if p.decode_scalar_s else None
    theirs = params / ref_s / 1e6 if ref_s else None
    return {
        "model": model, "method": method, **asdict(p),
        "ref_bytes_at_weight_sqnr": at_w, "ratio_weight": p.bytes / at_w if at_w else None,
        "ref_bytes_at_output_sqnr": at_o, "ratio_output": p.bytes / at_o if at_o else None,
        "decode_mwps": ours, "ref_decode_mwps": theirs,
        "decode_speedup": ours / theirs if ours and theirs else None,
        "decode_scalar_mwps": scalar, "vector_speedup": ours / scalar if ours and scalar else None,
        **extra,
    }


def _nearest(ref: list[Point], p: Point) -> Point:
    """The reference's point nearest ``p`` in weight SQNR (whose decoding ``p``'s is set
    against)."""
    return min(ref, key=lambda r: abs(r.weight_sqnr_db - p.weight_sqnr_db))


def _timed(subject: Subject, p: Point, ref: list[Point], extra: dict[str, Any],
           decoder: reference.Decoder) -> Point:
    """``p`` with its decoding timed against the reference's nearest QP (a reused row keeps
    its own timings)."""
    sections = extra.pop("sections", None)
    if sections is None:
        return p
    near = _nearest(ref, p)
    ours, scalar, theirs = decode_alternately(
        sections, subject.bitstream(int(near.label.split()[1])), decoder)
    return dataclasses.replace(p, decode_s=ours, decode_scalar_s=scalar, ref_decode_s=theirs,
                               ref_decode_label=near.label)


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _reused(rows: list[dict[str, Any]], name: str, method: str, bits: list[int]
            ) -> list[tuple[str, Point, dict[str, Any]]]:
    """Rows of an earlier results file for this model and method, at the bits asked."""
    fields = {f.name for f in dataclasses.fields(Point)}
    found = [r for r in rows if r["model"] == name and r["method"] == method]
    if method == "layer-mse":
        found = [r for r in found if int(r["label"].split()[0]) in bits]
    return [(r["label"], Point(**{k: r[k] for k in fields if k in r}),
             {"allocation": r.get("allocation"), "reused": True}) for r in found]


def run_model(
    name: str, bits: list[int], methods: list[str], reuse: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[Point]]:
    subject = Subject(get(name))
    print(f"\n{name}: {subject.params:,} quantized weights in {len(subject.names)} tensors, "
          f"rest of the model {subject.rest_bytes:,} B (zstd)", flush=True)
    rows: list[dict[str, Any]] = []
    anchors: dict[int, float] = {}
    points: dict[str, list[tuple[str, Point, dict[str, Any]]]] = {}
    for method in methods:
        again = _reused(reuse, name, method, bits)
        if again:
            points[method] = again
            if method == "layer-mse":
                anchors.update({int(lb.split()[0]): p.weight_sqnr_db for lb, p, _ in again})
            continue
        for label, spec in _specs(method, bits, anchors):
            point, extra = subject.ours(label, spec)
            if method == "layer-mse":
                anchors[int(spec["bits"])] = point.weight_sqnr_db
            layers = extra.pop("layers")
            extra["allocation"] = [{k: layer.get(k) for k in ("name", "bits", "xmax", "sqnr_db",
                                   "entropy_bits", "params")} for layer in layers]
            points.setdefault(method, []).append((label, point, extra))
    sqnrs = [p.weight_sqnr_db for pts in points.values() for _, p, _ in pts]
    start = time.perf_counter()
    qps = subject.qps_for(sqnrs)
    ref = subject.reference(qps)
    # Widen until the reference brackets every point (weights and outputs).
    for _ in range(4):
        outs = [p.output_sqnr_db for pts in points.values() for _, p, _ in pts]
        low = min(min(sqnrs), min(o for o in outs if math.isfinite(o)))
        high = max(max(sqnrs), max(o for o in outs if math.isfinite(o)))
        more = []
        if min(min(r.weight_sqnr_db, r.output_sqnr_db) for r in ref) > low:
            more += [qps[-1] + 2 * k for k in (1, 2, 3)]
        if max(r.weight_sqnr_db for r in ref) < high or max(r.output_sqnr_db for r in ref) < high:
            more += [qps[0] - 2 * k for k in (1, 2, 3)]
        if not more:
            break
        qps = sorted({*qps, *more})
        ref = subject.reference(qps)
    took = time.perf_counter() - start
    print(f"  reference: {len(ref)} QPs ({qps[0]}..{qps[-1]}) in {took:.0f} s")
    with reference.Decoder() as decoder:
        for method, pts in points.items():
            points[method] = [(label, _timed(subject, p, ref, extra, decoder), extra)
                              for label, p, extra in pts]
    print(f"  {'method':<12} {'point':>9} {'bytes':>10} {'b/w':>6} {'w SQNR':>7} {'out SQNR':>8} "
          f"{'ref@w':>10} {'ratio':>6} {'ref@out':>10} {'ratio':>6} {'dec M/s':>7} "
          f"{'scalar':>7} {'ref M/s':>7}")
    for method, pts in points.items():
        for _, p, extra in pts:
            row = _row(name, method, p, ref, extra, subject.params)
            rows.append(row)
            bpw = 8 * p.bytes / subject.params
            print(f"  {method:<12} {p.label:>9} {p.bytes:>10,} {bpw:>6.3f} "
                  f"{p.weight_sqnr_db:>7.2f} {p.output_sqnr_db:>8.2f} "
                  f"{_fmt(row['ref_bytes_at_weight_sqnr'], ',.0f'):>10} "
                  f"{_fmt(row['ratio_weight'], '.3f'):>6} "
                  f"{_fmt(row['ref_bytes_at_output_sqnr'], ',.0f'):>10} "
                  f"{_fmt(row['ratio_output'], '.3f'):>6} "
                  f"{_fmt(row['decode_mwps'], '.1f'):>7} "
                  f"{_fmt(row['decode_scalar_mwps'], '.1f'):>7} "
                  f"{_fmt(row['ref_decode_mwps'], '.1f'):>7}", flush=True)
    for r in rows:
        r["params"] = subject.params
        r["reference_rest_bytes"] = subject.rest_bytes
    return rows, ref


def rescore(source: Path, name: str) -> int:
    """Ratios and figure of an earlier run, from its stored points."""
    data = json.loads(source.read_text())
    fields = {f.name for f in dataclasses.fields(Point)}
    rows = []
    for row in data["rows"]:
        ref = [Point(**{k: p[k] for k in fields if k in p})
               for p in data["reference"][row["model"]]]
        point = Point(**{k: row[k] for k in fields if k in row})
        rescored = _row(row["model"], row["method"], point, ref, {}, int(row["params"]))
        rows.append({**row, **rescored})
        ratios = (_fmt(rescored["ratio_weight"], ".3f"), _fmt(rescored["ratio_output"], ".3f"))
        print(f"{row['model']:<12} {row['method']:<12} {row['label']:>9} "
              f"{ratios[0]:>6} {ratios[1]:>6}")
    write_results(name, {**data, "rows": rows})
    FIGURE.write_text(figure(rows, data["reference"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--bits", default=DEFAULT_BITS)
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--name", default="bench_nnr", help="results file name")
    parser.add_argument("--rescore", default="", help="a results file: recompute its ratios "
                        "and the figure from its points, measuring nothing")
    parser.add_argument("--reuse", default="", help="comma-separated results files whose "
                        "rows (by model and method) are taken instead of measured again")
    args = parser.parse_args(argv)
    bits = [int(b) for b in args.bits.split(",")]
    methods = args.methods.split(",")
    if args.rescore:
        return rescore(Path(args.rescore), args.name)
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    reuse = [row for f in filter(None, args.reuse.split(","))
             for row in json.loads(Path(f).read_text())["rows"]]
    for name in args.models.split(","):
        model_rows, ref = run_model(name, bits, methods, reuse)
        rows += model_rows
        curves[name] = [asdict(p) for p in ref]
    write_results(args.name, {"rows": rows, "reference": curves,
                              "conditions": {"bits": bits, "methods": methods}})
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    FIGURE.write_text(figure(rows, curves))
    print(f"figure: {FIGURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
