"""``quantcore.allocator``: freed arrays are reused instead of faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from quantcore.allocator import _glibc

# malloc itself, not NumPy: NumPy asks for huge pages on large arrays, which hides the count
# (not the cost) of the faults.
_PROBE = """
import ctypes, json, resource, sys
from quantcore.allocator import _glibc, keep_freed_memory

changed = keep_freed_memory() if sys.argv[1] == "tuned" else False
libc = _glibc()
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def faults_of_one_array():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    size = 100 << 20  # 100 MB: above glibc's largest default mmap threshold
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_array()
print(json.dumps({"changed": changed, "faults": faults_of_one_array()}))
"""


def _probe(mode: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          check=True, env={**clean, **env})  # fmt: skip
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(_glibc() is None, reason="the allocator settings are glibc's")
def test_a_freed_large_array_is_reused_without_page_faults() -> None:
    pages = (100 << 20) // 4096
    plain = _probe("plain")
    tuned = _probe("tuned")
    assert plain["faults"] >= pages // 2  # glibc's default maps and unmaps it each time
    assert tuned["changed"] is True
    assert tuned["faults"] < pages // 20


@pytest.mark.skipif(_glibc() is None, reason="the allocator settings are glibc's")
def test_the_operators_own_malloc_settings_are_left_alone() -> None:
    kept = _probe("tuned", MALLOC_ARENA_MAX="4")
    assert kept["changed"] is False
    assert kept["faults"] >= ((100 << 20) // 4096) // 2
