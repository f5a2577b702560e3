"""Every catalog model through many specs, each package unpacked and compared with its model.

    python -m bench.bench_roundtrip [--models a,b] [--specs FILE.jsonl]

Per job: whether it succeeded, was refused with a ``QuantError`` (a spec the model cannot
take: a clear refusal, by design) or crashed (any other exception: a bug); whether the
package writer had to replace an entropy stream that did not decode (``qpack.encode_body``
logs it: a coder bug it caught); and whether ``unpack_file`` restored ``model.onnx`` byte for
byte (the baseline: the job's own ``model.onnx``). A sweep of this kind found a v4 stream,
v3 streams and a target search that lost or crashed jobs (README, "Reliability").
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import write_results
from bench.realmodels.catalog import CATALOG
from bench.realmodels.fetch import fetch
from quantcore import JobInput, JobKind, QuantError, run_job, unpack_file

SPECS: tuple[dict[str, Any], ...] = (
    {"bits": 2}, {"bits": 3}, {"bits": 4}, {"bits": 5}, {"bits": 8}, {"bits": 16},
    {"bits": 3, "granularity": "channel"}, {"bits": 4, "granularity": "channel", "support": "mse"},
    {"bits": 8, "granularity": "channel"}, {"bits": 2, "granularity": "layer"},
    {"bits": 4, "granularity": "layer", "support": "mse"}, {"bits": 8, "granularity": "model"},
    {"bits": 3, "granularity": "group", "group_size": 16},
    {"bits": 8, "granularity": "group", "group_size": 256}, {"bits": 4, "zero_point": False},
    {"bits": 4, "entropy_coding": False}, {"bits": 4, "method": "mulaw"},
    {"bits": 4, "method": "log"}, {"bits": 8, "method": "float"}, {"bits": 3, "method": "deadzone"},
    {"bits": 3, "granularity": "layer", "rdoq": True},
    {"target": {"weight_sqnr_db": 12}, "rdoq": "auto"},
    {"target": {"weight_sqnr_db": 40}, "rdoq": "auto"},
    {"target": {"weight_sqnr_db": 60}, "rdoq": "trellis"},
    {"target": {"bits_per_weight": 0.5}}, {"target": {"bits_per_weight": 2.5}},
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Outcome:
    model: str
    spec: str
    result: str  # ok, refused, crashed
    replaced_streams: int
    restored: bool | None  # None: no package to restore
    seconds: float
    message: str


class _Replaced(logging.Handler):
    """Counts the writer's "did not decode" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "did not decode" in record.getMessage()


def run_one(model: str, path: Path, spec: dict[str, Any], work: Path) -> Outcome:
    replaced = _Replaced()
    logger = logging.getLogger("quantcore.formats.qpack")
    logger.addHandler(replaced)
    started = time.perf_counter()
    result, restored, message = "ok", None, ""
    try:
        out = work / "out"
        run_job(JobInput(kind=JobKind.QUANTIZE, model_path=path, spec=spec), out)
        unpack_file(out / "model.qpack", work / "restored.onnx")
        restored = (work / "restored.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    except QuantError as exc:
        result, message = "refused", f"{exc.code}: {exc.message}"
    except Exception as exc:  # any other exception is the bug this looks for
        result, message = "crashed", f"{type(exc).__name__}: {exc}"
    finally:
        logger.removeHandler(replaced)
    return Outcome(model=model, spec=json.dumps(spec, sort_keys=True), result=result,
                   replaced_streams=replaced.count, restored=restored,
                   seconds=time.perf_counter() - started, message=message[:300])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(e.name for e in CATALOG))
    parser.add_argument("--specs", type=Path, help="a JSONL file of specs (default: SPECS)")
    args = parser.parse_args(argv)
    specs = SPECS if args.specs is None else tuple(
        json.loads(line) for line in args.specs.read_text().splitlines() if line.strip())
    outcomes = []
    for name in args.models.split(","):
        path = fetch(name)
        for spec in specs:
            with tempfile.TemporaryDirectory(prefix="roundtrip-") as tmp:
                o = run_one(name, path, spec, Path(tmp))
            outcomes.append(o)
            if o.result != "ok" or o.replaced_streams or o.restored is False:
                print(f"{o.model:12s} {o.spec}: {o.result}, {o.replaced_streams} stream(s) "
                      f"replaced, restored={o.restored} {o.message}", flush=True)  # fmt: skip
    counts = {k: sum(o.result == k for o in outcomes) for k in ("ok", "refused", "crashed")}
    summary = {**counts, "jobs": len(outcomes),
               "replaced_streams": sum(o.replaced_streams for o in outcomes),
               "not_restored": sum(o.restored is False for o in outcomes)}  # fmt: skip
    print(json.dumps(summary))
    write_results("bench_roundtrip", {"summary": summary,
                                      "outcomes": [asdict(o) for o in outcomes]})
    bad = counts["crashed"] + summary["replaced_streams"] + summary["not_restored"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
