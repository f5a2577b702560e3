"""Output fidelity of the current quantizer, and of its peers, on the real-model catalog.

For each model and each bit width (8, 6, 4, 3 by default) it runs our CLI with the service's
default spec ``{"bits": B}`` and with ``{"bits": B, "granularity": "channel", "support":
"max_abs"}``, then the peers at the widths they offer (onnxruntime dynamic int8 per tensor
and per channel, onnxruntime MatMulNBits 4-bit with blocks of 32 and 128, NNCF INT8 and
INT4). Every row gives runnable bytes, output SQNR and argmax agreement against the float
model on the catalog's inputs; our rows also carry what the CLI's report says it left in
float and its weakest layers, which is where output fidelity is usually lost.

    python -m bench.realmodels.baseline --out results.json [--models a,b] [--bits 8,4]

A time budget (``--budget-s``, default 14 minutes) keeps the run bounded on a 2-core
machine: once spent, remaining rows are written as "skipped (time budget)".
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from bench.realmodels import fidelity, methods
from bench.realmodels.catalog import CATALOG, ModelEntry, get
from bench.realmodels.fetch import fetch

DEFAULT_BITS = (8, 6, 4, 3)
CHANNEL_SPEC = {"granularity": "channel", "support": "max_abs"}


@dataclass(frozen=True, kw_only=True)
class Method:
    name: str
    bits: int
    quantize: Callable[[Path, Path], Path]
    spec: dict[str, Any] | None = None  # for our CLI: the spec sent
    # Its runnable bytes where its file is not the runnable form (RTN writes floats back).
    size: Callable[[Path, Path], int] | None = None


def _rtn(model: Path, out: Path, *, bits: int) -> Path:
    return methods.rtn_blocks(model, out, bits=bits)


def _cli(spec: dict[str, Any], source: Path | None) -> Callable[[Path, Path], Path]:
    return lambda model, out: methods.quantize_cli(model, spec, out, source=source)


def plan(bits: Sequence[int], cli_source: Path | None = None) -> list[Method]:
    """The methods to run, by bit width: ours at every width, peers where they have one."""
    out: list[Method] = []
    for b in bits:
        layer, channel = {"bits": b}, {"bits": b, **CHANNEL_SPEC}
        out += [
            Method(name="qs-default", bits=b, quantize=_cli(layer, cli_source), spec=layer),
            Method(name="qs-channel-maxabs", bits=b, quantize=_cli(channel, cli_source),
                   spec=channel),
        ]
        if b == 8:
            out += [
                Method(name="ort-dynamic", bits=8,
                       quantize=lambda m, o: methods.ort_dynamic(m, o, per_channel=False)),
                Method(name="ort-dynamic-ch", bits=8,
                       quantize=lambda m, o: methods.ort_dynamic(m, o, per_channel=True)),
                Method(name="nncf-int8", bits=8,
                       quantize=lambda m, o: methods.nncf_compress(m, o, bits=8)),
            ]
        if b == 4:
            out += [
                Method(name="ort-nbits-b32", bits=4,
                       quantize=lambda m, o: methods.ort_matmul_nbits(m, o, block_size=32)),
                Method(name="ort-nbits-b128", bits=4,
                       quantize=lambda m, o: methods.ort_matmul_nbits(m, o, block_size=128)),
                Method(name="nncf-int4-g128", bits=4,
                       quantize=lambda m, o: methods.nncf_compress(m, o, bits=4)),
            ]
        if b in (4, 3):
            out.append(Method(name="rtn-b32", bits=b, size=methods.rtn_size,
                              quantize=functools.partial(_rtn, bits=b)))
    return out


def _report_fields(out_dir: Path) -> dict[str, Any]:
    """What our CLI's report says: tensors left in float (by reason) and the weakest layers."""
    report = methods.read_report(out_dir)
    summary = report.get("summary", {})
    reasons = Counter(s.get("reason", "?") for s in report.get("skipped", []))
    layers = sorted(
        (x for x in report.get("layers", []) if x.get("sqnr_db") is not None),
        key=lambda x: x["sqnr_db"],
    )
    qpack = summary.get("artifacts", {}).get("model.qpack")
    return {
        "quantized_tensors": summary.get("quantized_tensors"),
        "skipped_tensors": summary.get("skipped_tensors"),
        "skipped_reasons": dict(reasons.most_common()),
        "weight_sqnr_db": summary.get("sqnr_db"),
        "qpack_bytes": qpack,
        "worst_layers": [[x["name"], round(x["sqnr_db"], 2), x.get("params")] for x in layers[:3]],
    }


def _why(e: Exception) -> str:
    """The informative part of an error: onnxruntime's load and kernel errors start with a
    long prefix (code, path) before what went wrong."""
    text = str(e)
    for marker in ("Status Message:", "failed:"):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = " ".join(text.split())
    return f"{type(e).__name__}: {text[:220]}"


def _finite(x: float) -> float | str:
    """JSON has no infinities: ``inf``/``-inf`` are written as strings."""
    return x if math.isfinite(x) else str(x)


def measure_model(
    entry: ModelEntry, todo: Sequence[Method], work: Path, deadline: float
) -> list[dict[str, Any]]:
    """Rows for one model: the float reference first, then one per method."""
    path = fetch(entry.name)
    info = fidelity.describe(path)
    feeds = entry.feeds(0)
    ref = fidelity.run(fidelity.session(path), entry, feeds)
    base = {"model": entry.name, "kind": entry.kind, "float_params": info.float_params}
    rows = [{**base, "method": "float", "bits": 32, "status": "ok",
             "runnable_bytes": fidelity.runnable_bytes(path), "sqnr_db": "inf",
             "argmax_agreement": 1.0 if entry.argmax_outputs else None,
             "float_params_left": info.float_params}]
    for m in todo:
        row: dict[str, Any] = {**base, "method": m.name, "bits": m.bits, "spec": m.spec}
        rows.append(row)
        if time.monotonic() > deadline:
            row["status"] = "skipped (time budget)"
            continue
        out_dir = work / entry.name / f"{m.name}-{m.bits}"
        start = time.perf_counter()
        try:
            qpath = m.quantize(path, out_dir)
        except methods.BaselineUnavailable as e:
            row["status"] = f"n/a ({e})"
            continue
        except Exception as e:  # a peer failing on a model is a result, not a crash
            row["status"] = f"n/a ({_why(e)})"
            continue
        row["quantize_s"] = round(time.perf_counter() - start, 2)
        try:
            fid = fidelity.compare(entry, ref, qpath, feeds)
        except Exception as e:
            row["status"] = f"fails to run ({_why(e)})"
            continue
        runnable = m.size(path, out_dir) if m.size is not None else fid.runnable_bytes
        row.update(status="ok", runnable_bytes=runnable, sqnr_db=_finite(fid.sqnr_db),
                   argmax_agreement=fid.argmax_agreement, float_params_left=fid.float_params_left,
                   run_s=round(fid.run_s, 2))
        if m.spec is not None:
            row.update(_report_fields(out_dir))
    return rows


def _fmt_row(r: dict[str, Any]) -> str:
    head = (f"{r['model']:<12} {r['kind']:<15} {r['float_params']:>10,} {r['method']:<18} "
            f"{r['bits']:>4}")
    if r["status"] != "ok":
        return f"{head}  {r['status']}"
    sq = r["sqnr_db"]
    sq_text = f"{sq:>8.2f}" if isinstance(sq, float) else f"{sq:>8}"
    wsq = r.get("weight_sqnr_db")
    wsq_text = f"{wsq:>6.1f}" if isinstance(wsq, float) else f"{'-':>6}"
    agree = r["argmax_agreement"]
    agree_text = f"{100 * agree:>7.1f}%" if agree is not None else f"{'-':>8}"
    left = 100 * r["float_params_left"] / max(1, r["float_params"])
    return (f"{head} {r['runnable_bytes']:>11,} {sq_text} {agree_text} {left:>6.1f}% "
            f"{wsq_text}")


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """One line per row; ``fp left`` is the share of float parameters still stored in float,
    ``wSQNR`` the weight SQNR our CLI reports (its own view of the same run)."""
    print(f"{'model':<12} {'kind':<15} {'params':>10} {'method':<18} {'bits':>4} "
          f"{'runnable B':>11} {'SQNR dB':>8} {'argmax':>8} {'fp left':>7} {'wSQNR':>6}")
    for r in rows:
        print(_fmt_row(r))


def print_skips(rows: Sequence[dict[str, Any]]) -> None:
    """Per model, from our default 4-bit run (or the first of ours): what stayed float and
    the weakest layers."""
    seen: set[str] = set()
    ours = [r for r in rows if r.get("skipped_reasons") is not None]
    for r in sorted(ours, key=lambda r: (r["model"], r["bits"] != 4, r["method"] != "qs-default")):
        if r["model"] in seen:
            continue
        seen.add(r["model"])
        print(f"\n{r['model']} ({r['method']} {r['bits']} bits): {r['quantized_tensors']} "
              f"quantized, {r['skipped_tensors']} left in float")
        for reason, n in r["skipped_reasons"].items():
            print(f"    {n:>4} x {reason}")
        worst = ", ".join(f"{n} {s} dB ({p} params)" for n, s, p in r["worst_layers"])
        print(f"    weakest layers: {worst}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results JSON file")
    parser.add_argument("--models", help="comma-separated catalog names (default: all)")
    parser.add_argument("--bits", default=",".join(map(str, DEFAULT_BITS)),
                        help="comma-separated bit widths (default: 8,6,4,3)")
    parser.add_argument("--budget-s", type=float, default=840.0, help="time budget, seconds")
    parser.add_argument("--work", type=Path, help="keep quantized models here (default: temp)")
    parser.add_argument("--cli-source", type=Path,
                        help="run the CLI from this copy of quantcore/service/workers, e.g. "
                             "`git archive HEAD quantcore service workers | tar -x -C DIR`")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the peers' advice about pre-processing, opsets

    entries = [get(n) for n in args.models.split(",")] if args.models else list(CATALOG)
    todo = plan([int(b) for b in args.bits.split(",")], args.cli_source)
    start = time.monotonic()
    deadline = start + args.budget_s
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="realmodels-") as tmp:
        work = args.work or Path(tmp)
        for entry in entries:
            t0 = time.monotonic()
            model_rows = measure_model(entry, todo, work, deadline)
            rows += model_rows
            print(f"# {entry.name}: {time.monotonic() - t0:.0f}s", flush=True)
    elapsed = time.monotonic() - start
    print_table(rows)
    print_skips(rows)
    print(f"\nwhole run: {elapsed:.0f}s")
    meta = {"elapsed_s": round(elapsed, 1), "onnxruntime": ort.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "bits": args.bits, "budget_s": args.budget_s, "cli": str(methods.cli_path()),
            "cli_source": str(args.cli_source) if args.cli_source else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
