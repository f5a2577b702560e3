"""numba's BLAS probe is answered without importing ``scipy.linalg``, which still works after;
a quantize job loads the probe's module before its first kernel."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import numpy as np
from quantcore.quantizers import blas_probe
from quantcore.quantizers.kernels import add_counts
print("loaded on import:", "scipy.linalg.cython_blas" in sys.modules)
blas_probe.load()
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
        "loaded on import: False", "linalg before: False", "same module: True",
        "solve works: True",
    ]  # fmt: skip


JOB = """
import sys
from pathlib import Path
import onnx
from quantcore.compress.pipeline import load_model, quantize_model
from quantcore.spec import QuantSpec
from tests import models
path = Path(sys.argv[1])
onnx.save(models.mlp((16, 64, 10)), str(path))
quantize_model(load_model(path), QuantSpec.from_dict({"bits": 4}))
print("scipy.linalg" in sys.modules, "scipy.linalg.cython_blas" in sys.modules)
"""


def test_a_quantization_loads_no_scipy_linalg(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-c", JOB, str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.split() == ["False", "True"]
