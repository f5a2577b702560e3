"""What a machine's first job of each spec pays after ``quantserve warm``.

    python -m bench.bench_first_job [--cache DIR]

``quantserve warm`` (``quantcore/jobs/warm.py``) compiles numba's kernels into a new cache
folder (``NUMBA_CACHE_DIR``; ``--cache`` reuses one already warmed instead). Then each spec of
``SPECS`` quantizes the warm-up model twice, as whole ``quantserve quantize`` processes: the
first run compiles whatever kernel (or argument types) the warm-up missed, the second, the
baseline, finds everything in the cache. Per spec: both times, the first's extra seconds and
the kernels it added to the cache (files numba writes as it saves a compiled kernel: a count
that timing noise cannot fake). A spec that adds kernels names a job a deployed worker would
stall on, for seconds, the first time a caller asks for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import write_results

QUANTSERVE = Path(sys.executable).with_name("quantserve")

# The methods, granularities, code widths and supports a caller can combine.
SPECS: tuple[dict[str, Any], ...] = (
    {"bits": 8},
    {"bits": 4},
    {"bits": 2},
    {"bits": 1, "granularity": "layer"},
    {"bits": 8, "granularity": "channel"},
    {"bits": 4, "granularity": "channel"},
    {"bits": 3, "granularity": "channel"},
    {"bits": 12, "granularity": "channel"},
    {"bits": 8, "granularity": "layer"},
    {"bits": 16, "granularity": "layer"},
    {"bits": 8, "granularity": "model"},
    {"bits": 8, "rounding": "midtread", "granularity": "channel"},
    {"bits": 4, "granularity": "group", "group_size": 128},
    {"bits": 8, "granularity": "group", "group_size": 16},
    {"bits": 8, "granularity": "group", "group_size": 1024},
    {"bits": 10, "granularity": "group"},
    {"bits": 4, "granularity": "group", "zero_point": False},
    {"bits": 8, "granularity": "group", "zero_point": False},
    {"bits": 4, "rounding": "midtread", "granularity": "group"},
    {"bits": 4, "granularity": "channel", "support": "mse"},
    {"bits": 4, "granularity": "layer", "support": "mse"},
    {"bits": 4, "granularity": "group", "support": "mse"},
    {"bits": 8, "granularity": "group", "support": "mse"},
    {"bits": 4, "granularity": "channel", "support": "percentile", "support_value": 99.9},
    {"bits": 4, "granularity": "group", "support": "percentile", "support_value": 99.0},
    {"bits": 4, "granularity": "layer", "support": "hui"},
    {"bits": 4, "granularity": "layer", "support": "jayant"},
    {"bits": 4, "granularity": "channel", "support": "wmax"},
    {"bits": 4, "granularity": "layer", "support": "abs_wmin"},
    {"bits": 4, "granularity": "layer", "support": "value", "support_value": 0.1},
    {"bits": 8, "method": "mulaw"},
    {"bits": 4, "method": "mulaw", "granularity": "channel"},
    {"bits": 4, "granularity": "model", "method": "mulaw"},
    {"bits": 4, "method": "log"},
    {"bits": 8, "method": "log", "granularity": "channel"},
    {"bits": 4, "method": "log", "granularity": "channel", "support": "mse"},
    {"bits": 4, "method": "log", "granularity": "layer", "support": "mse"},
    {"bits": 8, "method": "float"},
    {"bits": 8, "method": "float", "exponent_bits": 5, "mantissa_bits": 2},
    {"bits": 6, "method": "float", "exponent_bits": 3, "mantissa_bits": 2},
    {"bits": 4, "method": "deadzone"},
    {"bits": 8, "method": "deadzone", "granularity": "channel"},
    {"bits": 8, "granularity": "layer", "rdoq": True},
    {"bits": 4, "granularity": "channel", "rdoq": True},
    {"bits": 8, "entropy_coding": False},
    {"target": {"bits_per_weight": 3.0}},
    {"target": {"weight_sqnr_db": 30.0}, "rdoq": "trellis"},
)

# The files numba writes for each kernel it saves: an index and one object file a signature.
_KERNEL_FILES = ("*.nbi", "*.nbc")


@dataclass(frozen=True, kw_only=True)
class FirstJob:
    spec: str
    first_s: float
    second_s: float  # the baseline: the same job with every kernel cached
    extra_s: float
    kernels_added: int  # cache files the first run wrote
    failed: str  # the first run's error, if any


def _cache_files(cache: Path) -> set[Path]:
    return {p for pattern in _KERNEL_FILES for p in cache.rglob(pattern)}


def _quantize(
    model: Path, spec: dict[str, Any], out: Path, env: dict[str, str]
) -> tuple[float, str]:
    started = time.perf_counter()
    argv = [str(QUANTSERVE), "quantize", str(model), "--spec", json.dumps(spec), "--out", str(out)]
    done = subprocess.run([*argv, "--quiet"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return seconds, (done.stderr.strip().splitlines() or ["failed"])[-1] if done.returncode else ""


def first_jobs(cache: Path, work: Path, env: dict[str, str]) -> list[FirstJob]:
    from quantcore.jobs.warm import warm_model

    model = work / "image.onnx"
    model.write_bytes(warm_model())
    rows = []
    print(" first s second s kernels  spec")
    for k, spec in enumerate(SPECS):
        before = _cache_files(cache)
        first, failed = _quantize(model, spec, work / f"first{k}", env)
        added = len(_cache_files(cache) - before)
        second, _ = _quantize(model, spec, work / f"second{k}", env)
        rows.append(FirstJob(spec=json.dumps(spec), first_s=round(first, 3),
                             second_s=round(second, 3), extra_s=round(first - second, 3),
                             kernels_added=added, failed=failed))  # fmt: skip
        print(
            f"{first:8.2f} {second:8.2f} {added:7d}  {json.dumps(spec)}"
            + (f"  failed: {failed}" if failed else ""),
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="a numba cache folder already warmed (skips the warm-up)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quantserve-first-job-") as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "numba"
        # Bytecode cached as an installed package has it (see bench_cli).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["NUMBA_CACHE_DIR"] = str(cache)
        warm_s = None
        if not args.cache:
            started = time.perf_counter()
            subprocess.run([str(QUANTSERVE), "warm"], env=env, check=True, capture_output=True)
            warm_s = round(time.perf_counter() - started, 2)
            print(f"quantserve warm: {warm_s} s, {len(_cache_files(cache))} cache files")
        rows = first_jobs(cache, Path(tmp), env)
    missed = [r.spec for r in rows if r.kernels_added]
    failed = [r.spec for r in rows if r.failed]
    print(
        f"{len(missed)} of {len(rows)} specs compiled kernels the warm-up missed"
        + (f"; failed: {failed}" if failed else "")
    )
    write_results("bench_first_job", {"warm_seconds": warm_s, "rows": [asdict(r) for r in rows]})


if __name__ == "__main__":
    main()
