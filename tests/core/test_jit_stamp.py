"""``quantcore.jit_stamp``: a cached kernel is compiled again when a module it imports changes,
and loaded from the cache while none does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from quantcore import jit_stamp

# A kernel module and the helper module it calls into, in a package (numba compiles the
# helper into the kernel's cached code).
_HELPERS = """
from quantcore.jit import njit

@njit(cache=True)
def offset():
    return {value}
"""
_KERNELS = """
from quantcore.jit import njit
from kpkg.helpers import offset

@njit(cache=True)
def shifted(x):
    return x + offset()
"""
_CALL = """
import json, sys
sys.path.insert(0, sys.argv[1])
from kpkg import kernels
print(json.dumps({"value": kernels.shifted(1.0),
                  "hits": sum(kernels.shifted.stats.cache_hits.values())}))
"""


def _package(root: Path, value: float) -> None:
    package = root / "kpkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text(_HELPERS.format(value=value))
    (package / "kernels.py").write_text(_KERNELS)


def _call(root: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _CALL, str(root)], capture_output=True,
                          text=True, check=True, timeout=600)  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(found, dict)
    return found


def test_a_kernel_is_compiled_again_when_a_module_it_imports_changes(tmp_path: Path) -> None:
    _package(tmp_path, 1.0)
    assert _call(tmp_path) == {"value": 2.0, "hits": 0}
    assert _call(tmp_path) == {"value": 2.0, "hits": 1}  # the same sources: from the cache
    # Only the helper changes (numba's own stamp, the kernel file's bytes, stays the same).
    _package(tmp_path, 5.0)
    assert _call(tmp_path) == {"value": 6.0, "hits": 0}
    assert _call(tmp_path) == {"value": 6.0, "hits": 1}


def test_the_closure_follows_package_imports_only(tmp_path: Path) -> None:
    _package(tmp_path, 1.0)
    package = tmp_path / "kpkg"
    (package / "sub").mkdir()
    (package / "sub" / "__init__.py").write_text("import json\nfrom ..helpers import offset\n")
    (package / "sub" / "relative.py").write_text(
        "from . import sibling\nfrom .. import helpers\nimport kpkg.kernels\nimport numpy\n"
    )
    (package / "sub" / "sibling.py").write_text("X = 1\n")
    root = jit_stamp._top_package(package / "sub" / "relative.py")
    assert root == package
    found = jit_stamp._imported(root, package / "sub" / "relative.py",
                                (package / "sub" / "relative.py").read_text())  # fmt: skip
    assert found == {package / "sub" / "sibling.py", package / "helpers.py",
                     package / "kernels.py"}  # fmt: skip
    init = jit_stamp._imported(root, package / "sub" / "__init__.py",
                               (package / "sub" / "__init__.py").read_text())  # fmt: skip
    assert init == {package / "helpers.py"}
    assert jit_stamp.closure_digest(package / "sub" / "relative.py") is not None
    assert jit_stamp.closure_digest(tmp_path / "outside.py") is None
