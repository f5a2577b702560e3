"""``quantcore.jit_runtime``: numba's runtime is compiled once, saved, and loaded by later
processes; an entry that is not whole is compiled again and rewritten, never run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantcore import jit_runtime

# A kernel that needs the runtime: it allocates, returns the array, and raises for n < 0.
_CALL = """
import json, sys
import numpy as np
from quantcore import jit_runtime
from quantcore.jit import njit
from numba.core.runtime import nrtdynmod

loads = []
read = jit_runtime.read_entry
jit_runtime.read_entry = lambda path: loads.append(read(path) is not None) or read(path)
compiled = []
original = nrtdynmod.create_nrt_module
nrtdynmod.create_nrt_module = lambda ctx: compiled.append(1) or original(ctx)

@njit(cache=False)
def spread(n):
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = i * 0.5
    return out

out = spread(4)
try:
    spread(-1)
    raised = None
except ValueError as error:
    raised = str(error)
print(json.dumps({"out": out.tolist(), "raised": raised, "loaded": loads,
                  "installed": nrtdynmod.compile_nrt_functions is jit_runtime._compile}))
"""
_EXPECTED = {"out": [0.0, 0.5, 1.0, 1.5], "raised": "negative dimensions not allowed",
             "installed": True}  # fmt: skip


def _call(cache: Path) -> tuple[dict[str, object], str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", _CALL], capture_output=True, text=True,
                          check=True, timeout=600, env=env)  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(found, dict)
    return found, done.stderr


def _entry(cache: Path) -> Path:
    (path,) = cache.rglob("nrt-*.bin")
    return path


def test_the_runtime_is_saved_by_one_process_and_loaded_by_the_next(tmp_path: Path) -> None:
    found, _ = _call(tmp_path)
    assert found == {**_EXPECTED, "loaded": [False]}  # compiled, then saved
    entry = _entry(tmp_path)
    saved = entry.read_bytes()
    found, stderr = _call(tmp_path)
    assert found == {**_EXPECTED, "loaded": [True]}  # the kernel ran on the loaded runtime
    assert entry.read_bytes() == saved and "runtime cache" not in stderr


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "flipped"])
def test_an_entry_that_is_not_whole_is_compiled_again_and_rewritten(
    tmp_path: Path, damage: str
) -> None:
    _call(tmp_path)
    entry = _entry(tmp_path)
    saved = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(saved[: len(saved) // 2])
    elif damage == "zeroed":
        entry.write_bytes(b"\0" * len(saved))
    else:  # one bit of the object code: the digest no longer matches
        body = bytearray(saved)
        body[-100] ^= 1
        entry.write_bytes(bytes(body))
    found, stderr = _call(tmp_path)
    assert found == {**_EXPECTED, "loaded": [False]}
    assert "is damaged; compiling it again" in stderr
    assert entry.read_bytes() == saved  # the same target, the same code: repaired
    found, _ = _call(tmp_path)
    assert found == {**_EXPECTED, "loaded": [True]}


def test_entries_round_trip_and_a_short_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nrt-x.bin"
    assert jit_runtime.read_entry(path) is None  # none yet: nothing logged, compiled
    jit_runtime.write_entry(path, b"object", b"bitcode")
    assert jit_runtime.read_entry(path) == (b"object", b"bitcode")
    assert [p.name for p in tmp_path.iterdir()] == ["nrt-x.bin"]  # no temporary left
    path.write_bytes(path.read_bytes()[:10])
    assert jit_runtime.read_entry(path) is None


def test_a_compile_of_another_shape_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from numba.core.runtime import nrtdynmod

    def compile_nrt_functions(ctx):  # type: ignore[no-untyped-def]
        return ctx.something_else()

    monkeypatch.setattr(nrtdynmod, "compile_nrt_functions", compile_nrt_functions)
    assert not jit_runtime.install()
    assert nrtdynmod.compile_nrt_functions is compile_nrt_functions
