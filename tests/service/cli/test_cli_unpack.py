"""``quantserve unpack`` without ``--out`` names the restored file after the package's format."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from quantcore.formats.container import build_container
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_reader import load_onnx
from quantcore.formats.onnx_writer import rewrite
from quantcore.formats.qpack import pack
from quantcore.formats.weights_io import read_npz, read_safetensors, write_npz, write_safetensors
from service.cli.local import restored_name
from service.cli.main import main
from tests import models
from tests.core.formats.onnx_helpers import affine

ARRAYS = {
    "dense.weight": np.random.default_rng(3).standard_normal((24, 16)).astype(np.float32),
    "dense.bias": np.zeros(24, np.float32),
}


@pytest.mark.parametrize("fmt", [ModelFormat.SAFETENSORS, ModelFormat.NPZ])
def test_unpack_restores_a_weights_package_under_its_own_suffix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: ModelFormat
) -> None:
    source = tmp_path / f"weights.{fmt.value}"
    if fmt is ModelFormat.SAFETENSORS:
        write_safetensors(source, ARRAYS.items())
        model = read_safetensors(source)
    else:
        write_npz(source, ARRAYS.items())
        model = read_npz(source)
    coded = {"dense.weight": affine(model.array("dense.weight"), 4, axis=0)}
    package = tmp_path / "model.qpack"
    package.write_bytes(pack(rewrite(build_container(model, coded), coded), coded, fmt=fmt).data)
    restored = tmp_path / f"model.{fmt.value}"
    assert restored_name(package) == restored

    assert main(["unpack", str(package)]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert [f["path"] for f in files] == [str(restored)]
    assert not (tmp_path / "model.onnx").exists()
    back = read_safetensors(restored) if fmt is ModelFormat.SAFETENSORS else read_npz(restored)
    assert [t.name for t in back.tensors] == list(ARRAYS)
    np.testing.assert_array_equal(back.array("dense.weight"), coded["dense.weight"].dequantized)


def test_unpack_of_a_damaged_package_exits_2_naming_the_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "broken.qpack"
    package.write_bytes(b"")
    assert main(["unpack", str(package)]) == 2
    assert "invalid_package" in capsys.readouterr().err
    package.write_bytes(b"NOTQPACK" + bytes(64))
    assert main(["unpack", str(package)]) == 2
    assert "not a .qpack package" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.qpack"]  # nothing written


def _onnx_package(tmp_path: Path, sizes: tuple[int, ...] | None = None) -> Path:
    """``model.qpack`` of an MLP's weights (``models.mlp``'s sizes unless given) at 8 bits."""
    model = models.mlp(opset=21) if sizes is None else models.mlp(sizes=sizes, opset=21)
    onnx.save(model, tmp_path / "float.onnx")
    source = load_onnx(tmp_path / "float.onnx")
    coded = {t.name: affine(source.array(t.name), 8) for t in source.tensors
             if t.role == "weight"}  # fmt: skip
    package = tmp_path / "model.qpack"
    package.write_bytes(pack(rewrite(source, coded), coded, fmt=ModelFormat.ONNX).data)
    return package


def _unpack(package: Path, out: Path, **options: Any) -> subprocess.CompletedProcess[str]:
    """``quantserve unpack`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli.main", "unpack", str(package), "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False, **options,
    )  # fmt: skip


def test_unpack_past_a_file_size_limit_exits_1_and_leaves_no_file(tmp_path: Path) -> None:
    # A write refused (here by a file size limit: EFBIG) is an error that names it, and the
    # partial file is removed.
    package = _onnx_package(tmp_path)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    run = _unpack(package, out, preexec_fn=limited)
    assert run.returncode == 1, run.stderr
    assert "cannot write the restored model" in run.stderr and "Traceback" not in run.stderr
    assert list(out.parent.iterdir()) == []
    run = _unpack(package, out)
    assert run.returncode == 0, run.stderr
    assert out.stat().st_size > 1024  # the limit was below the model


def test_unpack_onto_a_full_disk_exits_1_where_a_mapping_would_die(tmp_path: Path) -> None:
    # A 64 KiB tmpfs in a mount namespace of the command's own: the file's blocks are
    # allocated before it is mapped, so ENOSPC is an error (a mapping past the free space
    # would take SIGBUS in the page fault that found none).
    if shutil.which("unshare") is None or subprocess.run(
        ["unshare", "--mount", "true"], capture_output=True, check=False
    ).returncode:
        pytest.skip("needs a mount namespace (unshare --mount) to make a small filesystem")
    package = _onnx_package(tmp_path, (256, 256, 10))
    small = tmp_path / "small"
    small.mkdir()
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {small} && "
        f"{sys.executable} -m service.cli.main unpack {package} --out {small}/model.onnx; "
        f"code=$?; ls -A {small}; exit $code"
    )
    run = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                         text=True, timeout=120, check=False)  # fmt: skip
    assert run.returncode == 1, (run.returncode, run.stderr)
    assert "cannot write the restored model: cannot allocate its" in run.stderr
    assert "No space left on device" in run.stderr
    assert run.stdout.strip() == ""  # nothing left on the small disk


def test_unpack_into_a_folder_or_a_new_path_writes_where_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = _onnx_package(tmp_path)
    assert main(["unpack", str(package), "--out", str(tmp_path / "a")]) == 0  # a new file
    expected = (tmp_path / "a").read_bytes()
    folder = tmp_path / "restored"
    folder.mkdir()
    nested = tmp_path / "new" / "dir" / "m.onnx"
    for out, path in ((folder, folder / "model.onnx"), (nested, nested)):
        capsys.readouterr()
        assert main(["unpack", str(package), "--out", str(out)]) == 0
        assert json.loads(capsys.readouterr().out)["files"][0]["path"] == str(path)
        assert path.read_bytes() == expected
    blocked = tmp_path / "blocked"
    blocked.write_text("a file the caller keeps")
    assert main(["unpack", str(package), "--out", str(blocked / "m.onnx")]) == 2
    assert "a file is there, not a folder" in capsys.readouterr().err
    assert blocked.read_text() == "a file the caller keeps"
