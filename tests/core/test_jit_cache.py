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


def test_library_methods_of_another_shape_keep_numbas_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from numba.core import codegen

    from quantcore import jit, jit_cache  # noqa: F401  (importing jit installs jit_cache)

    library = codegen.CPUCodeLibrary
    assert library._get_module_for_linking is jit_cache._module_for_linking

    def other(cls: object, codegen: object, state: object) -> None:
        return None

    monkeypatch.setattr(library, "_unserialize", classmethod(jit_cache._numba_unserialize))
    monkeypatch.setattr(library, "_get_module_for_linking", jit_cache._numba_module_for_linking)
    monkeypatch.setattr(jit_cache, "_numba_unserialize", other)
    jit_cache._install_lean_loads()
    assert library._get_module_for_linking is jit_cache._numba_module_for_linking  # neither
    assert library._unserialize.__func__ is not jit_cache._unserialize


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


# After a cache hit: whether the library's bitcode was left unparsed, then a kernel compiled
# in this process that calls the cached one (numba links its library into the new one).
_LINK = """
import json, sys
sys.path.insert(0, sys.argv[1])
import kernels
from quantcore.jit import njit
kernels.spread(4)
(library,) = [c.library for c in kernels.spread.overloads.values()]
unparsed = "_unparsed_bitcode" in library.__dict__

@njit(cache=False)
def twice(n):
    out, total = kernels.spread(n)
    return total * 2.0 + out[1]

found = {"hits": sum(kernels.spread.stats.cache_hits.values()), "unparsed": unparsed,
         "linked": twice(4), "parsed": "_unparsed_bitcode" not in library.__dict__}
print(json.dumps(found))
"""


def test_a_cached_kernel_keeps_its_bitcode_unparsed_until_another_links_against_it(
    tmp_path: Path,
) -> None:
    folder = _cached(tmp_path)
    done = subprocess.run([sys.executable, "-c", _LINK, str(folder)], capture_output=True,
                          text=True, check=True, timeout=600)  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"hits": 1, "unparsed": True, "linked": 6.5, "parsed": True}


# Compiled in a fresh cache, so each library still holds its object code: each one's
# defined names read from the object against those numba reads from its bitcode.
_SYMBOLS = """
import json
import numpy as np
from llvmlite import binding as llvm
from quantcore import jit_cache
from quantcore.compress.gptq_kernel import round_block
from quantcore.quantizers.histogram_kernel import count_bins

count_bins(np.linspace(0, 1, 9, dtype=np.float32), 0.0, 4.0, np.zeros(4, np.int64))
w = np.zeros((1, 4, 8))
round_block(w, np.eye(8)[None], np.ones((1, 4)), np.ones((1, 4)), np.zeros((1, 4)), 0, 8,
            -8.0, 7.0, np.zeros((1, 4, 8), np.int8), np.zeros((1, 4, 8)))
compared = []
for kernel in (count_bins, round_block):
    for compiled in kernel.overloads.values():
        _, kind, (obj, bitcode) = compiled.library.serialize_using_object_code()
        module = llvm.parse_bitcode(bitcode)
        expected = {g.name for group in (module.functions, module.global_variables)
                    for g in group if not g.is_declaration}
        compared.append([kind, len(expected), jit_cache.defined_symbols(obj) == expected])
print(json.dumps(compared))
"""


def test_an_objects_defined_symbols_are_those_numba_reads_from_its_bitcode(
    tmp_path: Path,
) -> None:
    """The ELF symbol table gives the same names as the library's bitcode, for kernels that
    allocate and call many inlined helpers; another format gives None."""
    import os

    from quantcore import jit_cache

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _SYMBOLS], capture_output=True, text=True,
                          check=True, timeout=600, env=env)  # fmt: skip
    compared = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(compared) == 2
    assert all(kind == "object" and names > 10 and same for kind, names, same in compared)
    assert jit_cache.defined_symbols(b"\xcf\xfa\xed\xfe not an ELF object") is None
