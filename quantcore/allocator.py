"""The C allocator of a process that runs quantization jobs (glibc only; elsewhere a no-op).

A job allocates and frees arrays of tens of megabytes again and again (a layer's float64
copies for GPTQ, its codes, its decoded weights, onnxruntime's feeds). glibc serves each one
above its mmap threshold (at most 32 MB, and anything above a thread arena's 64 MB heaps)
with a fresh mapping that it unmaps on free, so each such array is faulted in again page by
page: a 13.5M-parameter model's 8-bit CLI job took 1.4 GB of page faults, 1.4 s of system
time in 3.3 s. With one arena, a mmap threshold of 256 MB and no trimming while it runs,
freed pages are reused: the same job 2.2-2.3 s, 0.4-0.5 s of system time, peak RSS +3-10%
(``bench/bench_cli.py``).

``keep_freed_memory`` must run before the process starts its threads (an arena already
created stays). A long-lived worker calls ``release_freed_memory`` after each job, so that
an idle worker does not keep its last job's peak. An operator who sets glibc's own
``MALLOC_*`` variables or ``GLIBC_TUNABLES`` keeps them: nothing is changed then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# Arrays below it come from the heap and are reused after free; larger ones (a huge model's
# tensors) still get a mapping of their own, returned at once, so that they fragment nothing.
MMAP_THRESHOLD = 256 << 20
_OPERATOR_SETTINGS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                      "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")  # fmt: skip


# Looked up once a process: find_library runs ldconfig (3 ms), and a worker releases memory
# after every job.
@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - musl and others have no such symbol
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """One arena, large arrays from the heap, no trimming; False where nothing was changed
    (not glibc, or the operator's own settings)."""
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    done = libc.mallopt(M_ARENA_MAX, 1)
    done &= libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    done &= libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    return bool(done)


def release_freed_memory() -> None:
    """Give the heap's free pages back to the system (after a job)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
