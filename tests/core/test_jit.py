"""``quantcore.jit``: numba's target set-up without SciPy's ``linalg`` package, BLAS intact."""

from __future__ import annotations

import json
import subprocess
import sys

# A fresh interpreter each: what a process imports is the point.
_KERNEL_CALL = """
import json, sys
import numpy as np
from quantcore.quantizers.kernels import add_counts

counts = np.zeros(256, np.int64)
add_counts(np.arange(10, dtype=np.uint8), counts, 255)  # sets up numba's CPU target
print(json.dumps({"counted": int(counts.sum()), "modules": sorted(
    m for m in sys.modules if m == "scipy.linalg" or m.startswith("scipy.linalg."))}))
"""

_BLAS_AFTER = """
import json
import numpy as np
import quantcore.jit
from numba import njit

@njit(cache=False)
def dot(a, b):
    return np.dot(a, b)  # numba calls SciPy's BLAS for this

a = np.arange(12.0).reshape(3, 4)
b = np.arange(8.0).reshape(4, 2)
from scipy.linalg import lapack, solve  # the package imported after its BLAS module
c, info = lapack.dpotrf(np.array([[4.0, 2.0], [2.0, 3.0]]))
print(json.dumps({"dot": np.array_equal(dot(a, b), a @ b),
                  "solve": solve(np.eye(2) * 2.0, np.ones(2)).tolist(), "info": info}))
"""


def _run(code: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=600)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_first_kernel_call_loads_scipy_blas_alone() -> None:
    found = _run(_KERNEL_CALL)
    assert found["counted"] == 10
    # numba's BLAS check found the extension module, so the package's __init__ never ran.
    assert found["modules"] == ["scipy.linalg.cython_blas"]


def test_blas_and_scipy_linalg_still_work_after_the_preload() -> None:
    found = _run(_BLAS_AFTER)
    assert found == {"dot": True, "solve": [0.5, 0.5], "info": 0}
