"""The runnable model's bytes against what its codes and scales need, on the real models.

For each catalog model it runs a quantize job with ``{"bits": B}`` (4 by default) and
compares ``model.onnx``'s size with a bound: the codes packed at their width
(``ceil(params · bits / 8)`` per tensor), a float16 scale and a 4-bit zero point per block
(the blocks counted from the written model's ``*.s`` initializers, in every subgraph),
and the untouched rest (the source file less the float bytes of the quantized tensors).
Issue 11's target: ``model.onnx`` within 3% of that bound. What is over it is the decode
subgraphs (nodes, initializer headers, shared shapes and block indices) and the opset
converter's changes.

    python -m bench.realmodels.sizes [name ...] [--bits B]     # default: every catalog model
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx

from bench.realmodels import fidelity
from bench.realmodels.catalog import CATALOG
from bench.realmodels.fetch import fetch
from quantcore import JobInput, JobKind, run_job

ITEM_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
TARGET = 0.03


def _block_count(model: Path) -> int:
    """Float16 block scales in the written model (the decode subgraphs' ``*.s``)."""
    half = onnx.TensorProto.FLOAT16
    return sum(math.prod(t.dims) for t in fidelity._tensors(onnx.load(str(model)))
               if t.name.endswith(".s") and t.data_type == half)  # fmt: skip


def measure(source: Path, bits: int) -> tuple[int, float]:
    """``model.onnx``'s bytes and the bound (module docstring) at ``bits``."""
    with tempfile.TemporaryDirectory() as out:
        job = JobInput(kind=JobKind.QUANTIZE, model_path=source, spec={"bits": bits})
        layers = run_job(job, Path(out)).report["layers"]
        written = Path(out) / "model.onnx"
        size, blocks = written.stat().st_size, _block_count(written)
    float_bytes = sum(row["params"] * ITEM_BYTES[row["dtype"]] for row in layers)
    codes = sum(math.ceil(row["params"] * row["bits"] / 8) for row in layers)
    rest = source.stat().st_size - float_bytes
    return size, rest + codes + 2.5 * blocks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="catalog names (default: all)")
    parser.add_argument("--bits", type=int, default=4)
    args = parser.parse_args(argv)
    names = args.names or [m.name for m in CATALOG]
    print(f"{'model':<14}{'model.onnx':>12}{'bound':>12}{'over':>8}")
    within = 0
    for name in names:
        size, bound = measure(fetch(name), args.bits)
        over = size / bound - 1
        within += over <= TARGET
        print(f"{name:<14}{size:>12,}{bound:>12,.0f}{over:>8.1%}")
    print(f"within {TARGET:.0%} of the bound: {within} of {len(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
