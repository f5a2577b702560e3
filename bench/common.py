"""What the benchmarks share: a seeded Laplacian source, best-of timing, traced memory peaks,
a printed table, and the results file under ``bench/results``."""

from __future__ import annotations

import json
import math
import socket
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import numpy as np

RESULTS_DIR = Path(__file__).parent / "results"

T = TypeVar("T")


def laplacian(n: int, *, std: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n`` float32 Laplacian weights, mean 0 and standard deviation ``std`` (scale
    ``std / √2``), from ``np.random.default_rng(seed)``: the same numbers on every run."""
    rng = np.random.default_rng(seed)
    return rng.laplace(0.0, std / math.sqrt(2.0), n).astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class Timed(Generic[T]):
    result: T  # of the last call
    seconds: float  # best wall-clock time
    cpu_seconds: float  # best CPU time of the process


def timed(fn: Callable[[], T], repeats: int) -> Timed[T]:
    """Best wall-clock and CPU time of ``repeats`` calls (at least one). On a shared machine
    the CPU time shows how much of the wall time was waiting. The previous call's result is
    dropped before the next call, so two never live at once."""
    best = best_cpu = math.inf
    last: T | None = None
    for _ in range(max(repeats, 1)):
        last = None
        start, cpu = time.perf_counter(), time.process_time()
        last = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return Timed(result=cast(T, last), seconds=best, cpu_seconds=best_cpu)


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak traced allocation while ``fn`` runs, its result included (NumPy reports its
    buffers to tracemalloc; native buffers of other libraries are not seen)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@dataclass(frozen=True, kw_only=True)
class Column:
    """One column of a printed table: ``field`` of each row, right-aligned unless ``left``."""

    header: str
    field: str
    width: int
    spec: str = ""  # what follows the width in the format, e.g. ".3f"
    left: bool = False

    def cell(self, value: Any, spec: str = "") -> str:
        return f"{value:{'<' if self.left else '>'}{self.width}{spec}}"


def print_table(rows: Sequence[object], columns: Sequence[Column]) -> None:
    print(" ".join(c.cell(c.header) for c in columns).rstrip())
    for row in rows:
        print(" ".join(c.cell(getattr(row, c.field), c.spec) for c in columns).rstrip())


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """``bench/results/<name>.json``, indented."""
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def scalar_decoder() -> Iterator[None]:
    """Within: streams planned within decode chunk by chunk with the scalar kernels, as before
    the vector decoders (v2's ``rans_batch``, the trellis streams' ``trellis_batch``)."""
    from quantcore.coding import rans_batch, trellis_batch

    saved = rans_batch._usable, rans_batch._kernels, trellis_batch._usable
    rans_batch._usable, rans_batch._kernels, trellis_batch._usable = False, None, False
    try:
        yield
    finally:
        rans_batch._usable, rans_batch._kernels, trellis_batch._usable = saved
