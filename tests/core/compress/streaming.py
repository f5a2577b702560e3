"""Helpers of the streaming tests: a model through ``quantcore.compress.stream`` as a job
runs it, and two folders of artifacts compared byte for byte."""

from __future__ import annotations

from pathlib import Path

from quantcore.compress.pipeline import QuantizedModel, load_model
from quantcore.compress.stream import CodeSpool, build_skeleton, quantize_streamed, write_streamed
from quantcore.spec import QuantSpec


def streamed(path: Path, spec: QuantSpec, spool_dir: Path, out_dir: Path) -> QuantizedModel:
    """Quantize ``path`` with its codes spooled in ``spool_dir``, close the source and write
    the artifacts into ``out_dir``; returns the quantized model (codes mapped from the spool)."""
    model = load_model(path)
    spool = CodeSpool(spool_dir, model.format)
    qmodel = quantize_streamed(model, spec, spool)
    written = build_skeleton(qmodel)
    model.close()
    write_streamed(qmodel, spool, out_dir, written)
    spool.close()
    return qmodel


def same_files(a: Path, b: Path) -> list[str]:
    """The names of the files in ``a``, checked to be those of ``b`` with the same bytes."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return names
