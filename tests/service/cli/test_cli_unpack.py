"""``quantserve unpack`` without ``--out`` names the restored file after the package's format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quantcore.formats.container import build_container
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_writer import rewrite
from quantcore.formats.qpack import pack
from quantcore.formats.weights_io import read_npz, read_safetensors, write_npz, write_safetensors
from service.cli.local import restored_name
from service.cli.main import main
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
