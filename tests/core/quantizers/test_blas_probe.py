"""numba's BLAS probe is answered without importing ``scipy.linalg``, which still works after."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import numpy as np
from quantcore.quantizers.kernels import add_counts
counts = np.zeros(256, np.int64)
add_counts(np.arange(10, dtype=np.uint8), counts, 255)
assert counts[:10].tolist() == [1] * 10 and counts.sum() == 10
print("linalg before:", "scipy.linalg" in sys.modules)
blas = sys.modules["scipy.linalg.cython_blas"]
import scipy.linalg
from scipy.linalg import cython_blas
print("same module:", cython_blas is blas)
a = np.array([[4.0, 1.0], [2.0, 3.0]])
print("solve works:", bool(np.allclose(a @ scipy.linalg.solve(a, [1.0, 2.0]), [1.0, 2.0])))
"""


def test_kernels_run_without_scipy_linalg_which_imports_later() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.splitlines() == [
        "linalg before: False", "same module: True", "solve works: True",
    ]  # fmt: skip
