"""``quantcore.jit``: numba's target set-up without SciPy's ``linalg`` package, BLAS intact, and
cache loads without the target's refresh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# A fresh interpreter each: what a process imports is the point.
_KERNEL_CALL = """
import json, sys
import numpy as np
from quantcore.quantizers.kernels import add_counts

counts = np.zeros(256, np.int64)
add_counts(np.arange(10, dtype=np.uint8), counts, 255)  # sets up numba's CPU target
print(json.dumps({"counted": counts[:10].tolist(), "modules": sorted(
    m for m in sys.modules if m == "scipy.linalg" or m.startswith("scipy.linalg."))}))
"""

_BLAS_AFTER = """
import json, sys
import numpy as np
import quantcore.jit
from numba import njit

@njit(cache=False)
def dot(a, b):
    return np.dot(a, b)  # numba calls SciPy's BLAS for this

a = np.arange(12.0).reshape(3, 4)
b = np.arange(8.0).reshape(4, 2)
loaded = sys.modules["scipy.linalg.cython_blas"]
from scipy.linalg import cython_blas, lapack, solve  # the package, after its BLAS module
c, info = lapack.dpotrf(np.array([[4.0, 2.0], [2.0, 3.0]]))
print(json.dumps({"dot": bool(np.array_equal(dot(a, b), a @ b)), "same": cython_blas is loaded,
                  "solve": solve(np.eye(2) * 2.0, np.ones(2)).tolist(), "info": info}))
"""

# The paths that run kernels: a quantization, and the unpack of its package.
_JOB = """
import json, sys
from pathlib import Path
import onnx
from quantcore.compress.artifacts import write_artifacts
from quantcore.compress.pipeline import build_onnx, load_model, quantize_model
from quantcore.spec import QuantSpec
from tests import models
folder = Path(sys.argv[1])
onnx.save(models.mlp((16, 64, 10)), str(folder / "m.onnx"))
qmodel = quantize_model(load_model(folder / "m.onnx"), QuantSpec.from_dict({"bits": 4}))
write_artifacts(qmodel, folder / "out", build_onnx(qmodel))
print(json.dumps("scipy.linalg" in sys.modules))
"""

_UNPACK = """
import json, sys
from pathlib import Path
from quantcore.formats.qpack import unpack_file
folder = Path(sys.argv[1])
unpack_file(folder / "out" / "model.qpack", folder / "restored.onnx")
print(json.dumps("scipy.linalg" in sys.modules))
"""


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

_CALL_CACHED = """
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


def _run(code: str, *args: str) -> object:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=True, timeout=600)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_first_kernel_call_loads_scipy_blas_alone() -> None:
    found = _run(_KERNEL_CALL)
    assert found == {"counted": [1] * 10, "modules": ["scipy.linalg.cython_blas"]}


def test_blas_and_scipy_linalg_still_work_after_the_preload() -> None:
    found = _run(_BLAS_AFTER)
    assert found == {"dot": True, "same": True, "solve": [0.5, 0.5], "info": 0}


def test_a_quantization_and_its_unpack_import_no_scipy_linalg(tmp_path: Path) -> None:
    assert _run(_JOB, str(tmp_path)) is False
    assert _run(_UNPACK, str(tmp_path)) is False
    assert (tmp_path / "restored.onnx").read_bytes() == (tmp_path / "out/model.onnx").read_bytes()


def test_a_cached_kernel_loads_without_the_registries_and_runs_as_compiled(tmp_path: Path) -> None:
    (tmp_path / "kernels.py").write_text(_KERNELS)
    compiled = _run(_CALL_CACHED, str(tmp_path))  # a cold cache: compiled, which refreshes
    loaded = _run(_CALL_CACHED, str(tmp_path))
    expected = {"out": [0.0, 0.5, 1.0, 1.5], "total": 3.0,
                "raised": "negative dimensions not allowed", "compiled": [3.0, 2.0, 1.0]}
    assert compiled == {**expected, "hits": 0, "registries": True}
    # From the cache: the same results and error, the registries never loaded, and a kernel
    # compiled afterwards still finds them.
    assert loaded == {**expected, "hits": 1, "registries": False}


def test_a_cache_loader_of_another_shape_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from numba.core import caching

    from quantcore import jit

    assert caching.Cache.load_overload is jit._load_with_runtime_only

    def other(self: object, sig: object, target_context: object) -> None:
        return None

    monkeypatch.setattr(caching.Cache, "load_overload", other)
    assert jit.trim_cache_loads() is False
    assert caching.Cache.load_overload is other
