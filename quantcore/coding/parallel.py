"""The threads that code chunks: one pool per size, sized to the cores by default.

The rANS kernels release the GIL, so the chunks of one stream run on every core. The pool's
own workers only run kernels and never wait on the pool, so callers on any thread (the
quantize pipeline's workers, a package's tensor decoders) may share it without deadlock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")
R = TypeVar("R")

_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def _forget_pools() -> None:
    """In a forked child (a prefork worker) the parent's pool threads do not exist: a pool
    that still counted them would never run a task. The child starts its own."""
    global _LOCK
    _POOLS.clear()
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_for(threads: int | None) -> int:
    """``threads``, or the cores when it is None; at least 1."""
    return max(1, cores() if threads is None else int(threads))


def run_all(fn: Callable[[T], R], items: Sequence[T], threads: int | None = None) -> list[R]:
    """``[fn(item) for item in items]``, on ``threads`` threads (default: the cores); one
    item, or one thread, runs on the caller's thread. The first exception is raised after
    every item has finished."""
    count = threads_for(threads)
    if count == 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with _LOCK:
        pool = _POOLS.get(count)
        if pool is None:
            pool = _POOLS[count] = ThreadPoolExecutor(count, thread_name_prefix="qent")
    futures = [pool.submit(fn, item) for item in items]
    errors = [f.exception() for f in futures]  # waits for all, so no chunk outlives a failure
    for error in errors:
        if error is not None:
            raise error
    return [f.result() for f in futures]


class ThreadBuffer:
    """A uint8 array for each thread, grown on demand and kept for the thread's next calls.
    Each instance is a buffer of its own, so that a caller's scratch and a callee's never
    overlap."""

    def __init__(self, least: int = 0) -> None:
        self._local = threading.local()
        self._least = least

    def get(self, size: int) -> npt.NDArray[np.uint8]:
        """This thread's first ``size`` bytes (at least ``least`` are held)."""
        held: npt.NDArray[np.uint8] | None = getattr(self._local, "array", None)
        if held is None or held.size < size:
            held = self._local.array = np.empty(max(size, self._least), np.uint8)
        return held[:size]
