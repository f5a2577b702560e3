"""``quantcore.jit_cache``: kernels load from numba's cache without the target's refresh, and a
cache entry that cannot be read or written costs a compile, never a job."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# A kernel that allocates (numba's runtime), returns a tuple, and raises for n < 0.
_KERNELS = """
import numpy as np
from quantcore.jit import njit

@njit(cache=True)
def spread(n):
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = i * 0.5
    total = 0.0
    for i in range(n):
        total += out[i]
    return out, total
"""

# A fresh interpreter each: what a process imports and finds in the cache is the point.
_CALL = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import kernels
out, total = kernels.spread(4)
try:
    kernels.spread(-1)
    raised = None
except ValueError as error:
    raised = str(error)
found = {"out": out.tolist(), "total": total, "raised": raised,
         "hits": sum(kernels.spread.stats.cache_hits.values()),
         "registries": "numba.np.arraymath" in sys.modules}
from numba import njit

@njit(cache=False)
def descending(a):
    return np.sort(a)[::-1].copy()

found["compiled"] = descending(np.array([2.0, 3.0, 1.0])).tolist()
print(json.dumps(found))
"""

_EXPECTED = {"out": [0.0, 0.5, 1.0, 1.5], "total": 3.0,
             "raised": "negative dimensions not allowed", "compiled": [3.0, 2.0, 1.0]}  # fmt: skip


def _call(folder: Path) -> tuple[dict[str, object], str]:
    done = subprocess.run([sys.executable, "-c", _CALL, str(folder)], capture_output=True,
                          text=True, check=True, timeout=600)  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(found, dict)
    return found, done.stderr


def _cached(tmp_path: Path) -> Path:
    """A folder with the kernel module, its cache written by a first call."""
    (tmp_path / "kernels.py").write_text(_KERNELS)
    found, _ = _call(tmp_path)  # a cold cache: compiled, which refreshes the target
    assert found == {**_EXPECTED, "hits": 0, "registries": True}
    return tmp_path


def _one(folder: Path, pattern: str) -> Path:
    (path,) = (folder / "__pycache__").glob(pattern)
    return path


def test_a_cached_kernel_loads_without_the_registries_and_runs_as_compiled(tmp_path: Path) -> None:
    folder = _cached(tmp_path)
    found, _ = _call(folder)
    # From the cache: the same results and error, the registries never loaded, and a kernel
    # compiled afterwards still finds them.
    assert found == {**_EXPECTED, "hits": 1, "registries": False}


def _truncate_data(folder: Path) -> None:
    data = _one(folder, "kernels.spread-*.nbc")
    data.write_bytes(data.read_bytes()[:100])


def _zero_index(folder: Path) -> None:
    index = _one(folder, "kernels.spread-*.nbi")
    index.write_bytes(b"\0" * index.stat().st_size)


@pytest.mark.parametrize("damage", [_truncate_data, _zero_index], ids=["data", "index"])
def test_an_unreadable_cache_entry_is_compiled_again_and_repaired(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    folder = _cached(tmp_path)
    damage(folder)
    found, stderr = _call(folder)
    assert found == {**_EXPECTED, "hits": 0, "registries": True}
    assert "is unreadable" in stderr and "compiling it again" in stderr
    found, stderr = _call(folder)  # the compile's save wrote the entry anew
    assert found == {**_EXPECTED, "hits": 1, "registries": False}
    assert "unreadable" not in stderr


def test_a_cache_that_cannot_be_written_leaves_the_kernel_running(tmp_path: Path) -> None:
    folder = _cached(tmp_path)
    index = _one(folder, "kernels.spread-*.nbi")
    index.unlink()
    index.mkdir()  # neither read nor replaced
    for _ in range(2):
        found, stderr = _call(folder)
        assert found == {**_EXPECTED, "hits": 0, "registries": True}
        assert "could not be written" in stderr and "runs compiled in memory" in stderr


def test_cache_methods_of_another_shape_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from numba.core import caching

    from quantcore import jit, jit_cache  # noqa: F401  (importing jit installs jit_cache)

    assert caching.Cache.load_overload is jit_cache._load
    assert caching.Cache.save_overload is jit_cache._save

    def other(self: object, sig: object, data: object) -> None:
        return None

    monkeypatch.setattr(caching.Cache, "save_overload", other)
    monkeypatch.setattr(caching.Cache, "load_overload", caching._Cache.load_overload)
    assert jit_cache.install() is False
    assert caching.Cache.save_overload is other  # neither replaced
    assert caching.Cache.load_overload is caching._Cache.load_overload


def test_check_saved_names_the_first_kernel_that_was_not_saved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from quantcore import jit_cache

    monkeypatch.setattr(jit_cache, "_unsaved", [])
    jit_cache.check_saved()  # nothing failed: passes
    jit_cache._unsaved.extend([("CPUDispatcher(<function spread>)", "OSError: [Errno 28] No space"),
                               ("CPUDispatcher(<function other>)", "OSError: read-only")])
    with pytest.raises(RuntimeError, match=r"for 2 kernel\(s\), the first .*spread.*Errno 28"):
        jit_cache.check_saved()
