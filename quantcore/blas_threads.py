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

import os

# 2^16 cycles (about 20 µs): calls back to back still find the threads awake.
THREAD_TIMEOUT = "16"


def idle_blas_threads() -> bool:
    """Let OpenBLAS's threads sleep soon after a call; False where the operator set it."""
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = THREAD_TIMEOUT
    return True
