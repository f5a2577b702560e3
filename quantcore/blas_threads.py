"""OpenBLAS's idle threads in a process that runs quantization jobs.

After each BLAS call it ran on its threads, OpenBLAS keeps them spinning for 2^28 cycles
(about 0.1 s here) in case another call follows. A job calls BLAS every few milliseconds
(GPTQ's updates, the statistics' dot products, the fits), so the spinning threads took
most of a core for the whole job, on a machine where the job's own threads want both:
captcha-ocr's 8-bit CLI job took 2.8 CPU-s (2.25 s), 2.35 (2.07 s) with a spin of 2^16
cycles; minilm-l3 at 4 bits 5.2 against 4.2 CPU-s (``bench/bench_cli.py``). Results are the
same bytes: the calls still run on the same threads, which only sleep sooner.

OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` when it loads (numpy's copy at ``import numpy``,
SciPy's at its first linear algebra), so ``idle_blas_threads`` must run before those imports
to reach both; child processes inherit it. An operator's own value wins.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

# 2^16 cycles (about 20 µs): calls back to back still find the threads awake.
THREAD_TIMEOUT = "16"


def idle_blas_threads() -> bool:
    """Let OpenBLAS's threads sleep soon after a call; False where the operator set it."""
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = THREAD_TIMEOUT
    return True


class _OneThread:
    """Who holds BLAS on one thread (``one_blas_thread``), and how to give it back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.limiter: Any = None


_ONE = _OneThread()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread while any caller is inside. OpenBLAS splits a float32 product, a
    Cholesky factor or a long dot product among its threads and adds the parts, so a job's
    results would move with the number of threads, a core each by default
    (``quantcore.jobs.run``). Counted, not nested: callers on overlapping threads (a pool
    process's warm-up job and its first job) share the setting, and the BLAS libraries
    loaded when the first came in get their threads back when the last leaves; a restore
    at each exit would put them back under the other's calls. Libraries loaded meanwhile
    (SciPy's) keep their own count: ``gptq_factors.load_lapack``."""
    from threadpoolctl import threadpool_limits

    with _ONE.lock:
        # Each caller sets it from its own thread: OpenBLAS 0.3.31 ignored a count set from a
        # thread other than the one that set it before (a pool's, or a warm-up's).
        limiter = threadpool_limits(limits=1, user_api="blas")
        if _ONE.holders == 0:
            _ONE.limiter = limiter  # the counts to give back: those before the first caller
        _ONE.holders += 1
    try:
        yield
    finally:
        with _ONE.lock:
            _ONE.holders -= 1
            if _ONE.holders == 0:
                _ONE.limiter.restore_original_limits()
                _ONE.limiter = None
