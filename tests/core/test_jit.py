"""``quantcore.jit``: numba's target set-up without SciPy's ``linalg`` package, BLAS intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
