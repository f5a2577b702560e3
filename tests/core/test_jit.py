"""``quantcore.jit``: numba's target set-up without SciPy's ``linalg`` package, BLAS intact;
numba's import without PyYAML (unless a config file asks for it) and without its scan for
extensions."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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


# The kernel call, then what numba's import read, and that PyYAML is still there for others.
_OPTIONAL_READS = _KERNEL_CALL.replace("print(", "kernel = (") + """
from numba.core import config, entrypoints
had_yaml = "yaml" in sys.modules
import yaml
print(json.dumps({"yaml_at_kernel": had_yaml, "numba_yaml": config._HAVE_YAML,
                  "config_read": config.DEBUG_CACHE == 1,
                  "extensions_skipped": entrypoints._already_initialized,
                  "yaml_later": yaml.safe_load("a: 1") == {"a": 1}}))
"""


def _pythonpath() -> str:
    """The repository first (the child may run in another folder), then what was set."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def _run(code: str, *args: str, cwd: Path | None = None) -> object:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=True, timeout=600, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": _pythonpath()})  # fmt: skip
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


def test_numba_loads_without_pyyaml_where_no_config_file_asks_for_it(tmp_path: Path) -> None:
    found = _run(_OPTIONAL_READS, cwd=tmp_path)
    assert found == {"yaml_at_kernel": False, "numba_yaml": False, "config_read": False,
                     "extensions_skipped": True, "yaml_later": True}  # fmt: skip


def test_a_numba_config_file_is_still_read(tmp_path: Path) -> None:
    (tmp_path / ".numba_config.yaml").write_text("debug_cache: 1\n")
    found = _run(_OPTIONAL_READS, cwd=tmp_path)
    assert found == {"yaml_at_kernel": True, "numba_yaml": True, "config_read": True,
                     "extensions_skipped": True, "yaml_later": True}  # fmt: skip


def test_only_the_jit_modules_import_numba() -> None:
    """At module level, every other module takes numba's names from ``quantcore.jit``, so that
    numba is always first imported there, trimmed (a function may import numba's own: it runs
    after its module, and so after ``quantcore.jit``)."""
    allowed = {"jit.py", "jit_cache.py", "jit_runtime.py", "jit_stamp.py"}
    found = []
    for path in sorted((ROOT / "quantcore").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "numba" or n.startswith("numba.") for n in names):
                found.append(path.relative_to(ROOT).as_posix())
    assert sorted({f for f in found if Path(f).name not in allowed}) == []
    assert {Path(f).name for f in found} == allowed
