"""Run every benchmark at its default (full) size, one after another, each in its own process.

    python -m bench [name ...]      # e.g. python -m bench bench_model bench_entropy

Each benchmark prints its table and writes ``bench/results/<name>.json``; a failing one is
reported and the rest still run. Exits non-zero if any failed.
"""

from __future__ import annotations

import subprocess
import sys
import time

ALL = (
    "bench_quantize",
    "bench_entropy",
    "bench_support",
    "bench_model",
    "bench_evaluate",
    "bench_report",
    "bench_upload",
    "bench_service",
    "bench_realmodels",
    "bench_families",
    "bench_faults",
    "bench_cli",
    "bench_scaleout",
    "bench_large",
    "bench_roundtrip",
)


def main(argv: list[str]) -> int:
    names = argv or list(ALL)
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(ALL)}")
        return 2
    failed = []
    for name in names:
        print(f"\n=== {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(f"=== {name}: exit {code} in {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
