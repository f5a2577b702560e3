"""How much of each real model's weights the default spec quantizes, and what stays float.

For each catalog model it runs a quantize job with ``{"bits": 8}`` (the service's default
policy) and divides the job's ``summary.quantized_params`` by the model's float weight
parameters: every float tensor except those the reader classes as bias, normalisation
parameter or input of an already-quantized operator. Constants such as ``Resize`` scales
and activation parameters stay in that denominator, so the share is a lower bound. The
largest tensors left in float are listed with the report's reason.

    python -m bench.realmodels.coverage [name ...]      # default: every catalog model
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.realmodels.catalog import CATALOG
from bench.realmodels.fetch import fetch
from quantcore import JobInput, JobKind, run_job
from quantcore.formats.onnx_reader import load_onnx
from quantcore.formats.roles import FLOAT_DTYPES, Role

NOT_WEIGHTS = (Role.BIAS, Role.NORM, Role.QUANTIZED)


def coverage(path: Path, shown: int = 3) -> tuple[int, int, list[str]]:
    """Quantized and float weight parameters of ``path``, and the largest tensors left."""
    tensors = [t for t in load_onnx(path).tensors if t.dtype in FLOAT_DTYPES]
    weights = {t.name: t.size for t in tensors if t.role not in NOT_WEIGHTS}
    with tempfile.TemporaryDirectory() as out:
        job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 8})
        report = run_job(job, Path(out)).report
    left = sorted(
        (
            (weights[s["name"]], s["name"], s["reason"])
            for s in report["skipped"]
            if s["name"] in weights
        ),
        reverse=True,
    )
    notes = [f"{size:>8,}  {name}: {reason}" for size, name, reason in left[:shown]]
    return int(report["summary"]["quantized_params"]), sum(weights.values()), notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="catalog names (default: all)")
    names = parser.parse_args(argv).names or [m.name for m in CATALOG]
    print(f"{'model':<14}{'quantized':>13}{'weights':>13}{'share':>9}")
    for name in names:
        quantized, weights, notes = coverage(fetch(name))
        print(f"{name:<14}{quantized:>13,}{weights:>13,}{quantized / weights:>9.2%}")
        for note in notes:
            print(f"    left float {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
