"""Weights files (``.safetensors``, ``.npz``) through the streaming pipeline: the same
``model.safetensors`` / ``model.npz`` and ``model.qpack`` bytes as the in-memory writers, the
package unpacking to the file, and the output file written one array at a time."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from quantcore.compress.artifacts import write_artifacts, write_weights
from quantcore.compress.pipeline import load_model, quantize_model
from quantcore.formats.qpack import unpack_file
from quantcore.formats.weights_io import (
    write_npz,
    write_safetensors,
    write_safetensors_streamed,
)
from quantcore.spec import QuantSpec
from tests.core.compress.streaming import same_files, streamed


def weights_file(folder: Path, suffix: str, *, rows: int = 96) -> Path:
    """Float32, float16 and bfloat16 matrices, a 3-D kernel, biases, a norm and an integer
    array, with metadata where the format has it."""
    rng = np.random.default_rng(11)
    arrays = {
        "embed.weight": rng.laplace(size=(rows, 48)).astype(np.float32),
        "block.0.weight": rng.laplace(size=(64, rows)).astype(np.float16),
        "block.0.bias": rng.normal(size=64).astype(np.float32),
        "block.0.norm.weight": np.ones(64, np.float32),
        "final.norm.weight": rng.normal(size=48).astype(ml_dtypes.bfloat16),  # kept, bfloat16
        "conv.weight": rng.laplace(size=(16, 8, 3)).astype(ml_dtypes.bfloat16),
        "head.weight": rng.standard_t(3, size=(10, 64)).astype(np.float32),
        "steps": np.arange(7, dtype=np.int64),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"weights{suffix}"
    if suffix == ".safetensors":
        write_safetensors(path, arrays.items(), {"format": "pt", "source": "tests"})
    else:
        for name in ("conv.weight", "final.norm.weight"):  # np.save keeps bfloat16 as void
            arrays.pop(name)
        write_npz(path, arrays.items())
    return path


def _both(path: Path, spec: dict, tmp: Path) -> tuple[Path, Path]:
    qspec = QuantSpec.from_dict(spec)
    write_artifacts(quantize_model(load_model(path), qspec), tmp / "a")
    streamed(path, qspec, tmp / "spool", tmp / "b")
    assert sorted(p.name for p in (tmp / "spool").iterdir()) == ["codes.bin"]  # container gone
    return tmp / "a", tmp / "b"


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
@pytest.mark.parametrize("spec", [{}, {"bits": 4, "granularity": "channel"},
                                  {"bits": 6, "entropy_coding": False}])  # fmt: skip
def test_weights_files_stream_to_the_same_artifacts(tmp_path, suffix, spec):
    path = weights_file(tmp_path / "in", suffix)
    a, b = _both(path, spec, tmp_path)
    assert same_files(a, b) == sorted([f"model{suffix}", "model.qpack"])
    restored = tmp_path / f"restored{suffix}"
    unpack_file(b / "model.qpack", restored)
    assert restored.read_bytes() == (b / f"model{suffix}").read_bytes()


def test_past_the_inline_limit_the_same_package(tmp_path, monkeypatch):
    """A container over the inline limit: the package's skeleton is the emptied graph, as
    the in-memory writer makes it, and no container file is written."""
    monkeypatch.setattr("quantcore.formats.onnx_writer.MAX_INLINE_BYTES", 4 << 10)
    path = weights_file(tmp_path / "in", ".safetensors", rows=512)
    a, b = _both(path, {"bits": 8}, tmp_path)
    assert same_files(a, b) == ["model.qpack", "model.safetensors"]


def test_a_weights_job_leaves_no_spool(tmp_path):
    from quantcore import JobInput, JobKind, run_job

    path = weights_file(tmp_path / "in", ".safetensors")
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4})
    out = run_job(job, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "model.qpack", "model.safetensors", "report.html", "report.json"
    ]  # fmt: skip
    assert [p.name for p in out.artifacts][:2] == ["model.safetensors", "model.qpack"]


def test_the_weights_file_is_written_one_array_at_a_time(tmp_path):
    """Eight 4 MB matrices: writing the dequantized file takes about one array's memory
    (its dequantized float64 and float32 copies), not the model's 32 MB."""
    rng = np.random.default_rng(2)
    arrays = {f"layer.{i}.weight": rng.laplace(size=(1024, 1024)).astype(np.float32)
              for i in range(8)}  # fmt: skip
    path = tmp_path / "big.safetensors"
    write_safetensors(path, arrays.items())
    model = load_model(path)
    qmodel = quantize_model(model, QuantSpec.from_dict({"bits": 4, "granularity": "layer"}))
    tracemalloc.start()
    try:
        write_weights(qmodel, model, tmp_path / "out.safetensors")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one = 1024 * 1024 * 4
    assert peak < 4 * one, f"peak {peak / one:.1f} arrays"
    write_artifacts(qmodel, tmp_path / "all")  # the in-memory writer: the same bytes
    assert (tmp_path / "out.safetensors").read_bytes() == (
        tmp_path / "all" / "model.safetensors"
    ).read_bytes()


def test_the_streamed_writer_refuses_an_array_unlike_its_header(tmp_path):
    layout = [("a", np.dtype(np.float32), (2, 3))]
    with pytest.raises(ValueError, match=r"a: float16\(2, 3\) where the header has float32"):
        write_safetensors_streamed(tmp_path / "x.safetensors", layout,
                                   [np.zeros((2, 3), np.float16)])  # fmt: skip


def _file_rss() -> int:
    """The process's resident pages mapped from files (bytes; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_a_safetensors_file_is_mapped_one_array_at_a_time(tmp_path):
    """Each array is mapped when asked for and unmapped when dropped: reading every array
    of a 64 MB file leaves no more than one array's pages in the process."""
    from quantcore.formats.weights_io import read_safetensors

    rng = np.random.default_rng(4)
    arrays = {f"w{i}": rng.standard_normal((1024, 1024)).astype(np.float32) for i in range(16)}
    path = tmp_path / "w.safetensors"
    write_safetensors(path, arrays.items())
    del arrays
    model = read_safetensors(path)
    before = _file_rss()
    total = 0.0
    for tensor in model.tensors:
        total += float(model.array(tensor.name).sum())  # every page read
    assert np.isfinite(total)
    assert _file_rss() - before < 8 << 20
