"""The quantize pipeline for models larger than memory: codes and package sections go to disk
as each tensor is done, and the artifacts are written from there.

``quantize_streamed`` runs ``pipeline.quantize_model`` with a sink that appends each tensor's
codes to a *codes* file in a spool folder and its section to the package being written there
(``quantcore.formats.qpack_stream``: layout 3 puts the sections first), and keeps of the
tensor only its decoder and report row. The returned model's codes are read-only views of the
codes file, mapped from disk: the report's histograms and the fidelity check read them as they
would arrays. Pages of a mapping that were read count in the process's RSS until they are
dropped, so each reader of all the codes calls ``CodeSpool.release`` after each tensor (the
pages stay in the page cache; a later read maps them again).

``write_streamed`` then writes ``model.onnx`` (``quantcore.formats.onnx_stream``: each code
tensor's bytes made from its mapped codes when its turn comes; past 2 GB with external data)
and finishes the package: its skeleton is cut from the ``model.onnx`` just written, mapped,
where the writer recorded each code tensor's place. Both are byte for byte what
``pipeline.write_artifacts`` writes for the same model. A model written with external data
has its package finished first (from the proto, which saving changes), so the disk holds the
codes as the spool's codes file, the package and ``model.onnx.data``, each once. A weights
file (``.safetensors``, ``.npz``) streams too: its package is cut from its container graph
(``quantcore.formats.container``), written to the spool for that and removed, and the output
file gets its arrays one at a time, each quantized one dequantized from its mapped codes.

Memory, whatever the model's size: the tensors being quantized (``pipeline.WORKERS`` and one
read ahead, each with its temporaries), the skeleton (graph, scales and float tensors, no
codes) and one code tensor's bytes while it is written; the package's skeleton and piece
hashes read ``model.onnx`` through a mapping (page cache).
"""

from __future__ import annotations

import dataclasses
import mmap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from quantcore.compress.artifacts import Artifacts, write_weights
from quantcore.compress.pipeline import (
    CodedWeight,
    Fraction,
    QuantizedModel,
    build_onnx,
    quantize_model,
)
from quantcore.formats.containers import code_raw_data
from quantcore.formats.load import Model
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_stream import (
    CodeData,
    code_nbytes,
    needs_external_data,
    save_onnx_streamed,
)
from quantcore.formats.onnx_writer import WrittenModel
from quantcore.formats.qpack_stream import StreamedPackage
from quantcore.formats.weights_io import WeightsModel
from quantcore.spec import QuantSpec

CODES_FILE = "codes.bin"
PACKAGE_FILE = "model.qpack"
CONTAINER_FILE = "container.onnx"  # a weights file's graph, written only to cut its package
ALIGN = 64  # each tensor's codes start on a multiple of this in the codes file


@dataclass(frozen=True, kw_only=True)
class _Place:
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]


class CodeSpool:
    """The codes of quantized tensors in a folder on disk, and their package being written
    there (moved to the output folder when it is finished)."""

    def __init__(self, folder: Path, fmt: ModelFormat) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.codes_path = folder / CODES_FILE
        self._codes: IO[bytes] | None = self.codes_path.open("wb")
        self.package = StreamedPackage(folder / PACKAGE_FILE, fmt)
        self.places: dict[str, _Place] = {}
        self._map: mmap.mmap | None = None

    def take(self, weight: CodedWeight) -> CodedWeight:
        """Write ``weight``'s codes and section; keep the rest (codes as an empty stand-in
        until ``mapped``)."""
        assert self._codes is not None, "spool closed"
        codes = np.ascontiguousarray(weight.codes)
        offset = self._codes.tell()
        pad = -offset % ALIGN
        if pad:
            self._codes.write(b"\0" * pad)
            offset += pad
        self._codes.write(codes.reshape(-1).view(np.uint8).data)
        self.places[weight.name] = _Place(offset=offset, dtype=codes.dtype, shape=codes.shape)
        self.package.add(weight.name, weight.body)
        return dataclasses.replace(weight, codes=np.empty(0, codes.dtype), body=b"")

    def mapped(self, weights: tuple[CodedWeight, ...]) -> tuple[CodedWeight, ...]:
        """``weights`` with their codes as read-only views of the codes file (closed now)."""
        if self._codes is not None:
            self._codes.close()
            self._codes = None
        size = self.codes_path.stat().st_size
        if size == 0:
            return weights
        with self.codes_path.open("rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        mapped = np.frombuffer(self._map, dtype=np.uint8)
        out = []
        for weight in weights:
            place = self.places[weight.name]
            count = int(np.prod(place.shape, dtype=np.int64))
            end = place.offset + count * place.dtype.itemsize
            codes = mapped[place.offset : end].view(place.dtype).reshape(place.shape)
            out.append(dataclasses.replace(weight, codes=codes))
        return tuple(out)

    def release(self, weight: CodedWeight | None = None) -> None:
        """Drop the pages of ``weight``'s codes (of all codes: None) from the process's
        memory; they are read again from the file (or the page cache) if needed."""
        if self._map is None:
            return
        start, end = 0, len(self._map)
        if weight is not None:
            place = self.places[weight.name]
            start = place.offset - place.offset % mmap.PAGESIZE
            end = min(end, place.offset + weight.codes.nbytes)
        if end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        """Close the files (the mapping stays while codes views of it are alive)."""
        if self._codes is not None:
            self._codes.close()
            self._codes = None
        self.package.close()


def quantize_streamed(
    model: Model,
    spec: QuantSpec,
    spool: CodeSpool,
    progress: Fraction | None = None,
    **options: Any,
) -> QuantizedModel:
    """``quantize_model`` with codes and sections kept in ``spool`` rather than in memory;
    ``options`` go to ``quantize_model`` (``workers``, ``stats``)."""
    qmodel = quantize_model(model, spec, progress, sink=spool.take, **options)
    return dataclasses.replace(qmodel, weights=spool.mapped(qmodel.weights))


def build_skeleton(qmodel: QuantizedModel) -> WrittenModel:
    """The written model without its codes' data (``pipeline.build_onnx``'s, otherwise)."""
    return build_onnx(qmodel, inline_codes=False)


def write_streamed(
    qmodel: QuantizedModel, spool: CodeSpool, out_dir: Path, written: WrittenModel
) -> Artifacts:
    """Write the quantized model and ``model.qpack`` of ``qmodel`` from ``spool``;
    ``written`` is ``build_skeleton(qmodel)`` (the source may be closed by now). The
    skeleton's own large tensors move out of ``written.proto`` past 2 GB. A weights file's
    package is cut from its container graph, written to the spool with its codes and removed
    once the package is done; the file itself gets its arrays one at a time."""
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    codes: dict[str, CodeData] = {}
    for weight in qmodel.weights:
        storage = written.codes[weight.name]
        codes[storage.initializer] = CodeData(
            nbytes=code_nbytes(int(weight.codes.size), storage.elem_type),
            make=_maker(spool, weight, storage.elem_type),
        )
    source = qmodel.source
    weights_file = isinstance(source, WeightsModel)
    model_path = out_dir / f"model.{source.format.value}"  # model.onnx, .safetensors, .npz
    onnx_path = spool.folder / CONTAINER_FILE if weights_file else model_path
    package = spool.package
    package.describe(written, [(w.name, w) for w in qmodel.weights], qmodel.spec.entropy_coding)
    if needs_external_data(written.proto, codes):  # the package first: saving changes the proto
        package.finish_proto(written)
        paths = () if weights_file else save_onnx_streamed(written.proto, onnx_path, codes).paths
    else:
        saved = save_onnx_streamed(written.proto, onnx_path, codes)
        package.finish(onnx_path, saved.regions)
        paths = saved.paths
    if isinstance(source, WeightsModel):  # (``weights_file``, narrowed for the type checker)
        onnx_path.unlink(missing_ok=True)
        write_weights(qmodel, source, model_path, done=spool.release)
        paths = (model_path,)
    package_path = package.path.replace(out_dir / PACKAGE_FILE)
    return Artifacts.written((*paths, package_path), model_path, start)


def quantize_written(
    model: Model, spec: QuantSpec, out_dir: Path, spool_dir: Path
) -> tuple[QuantizedModel, Artifacts]:
    """``spec`` applied to ``model`` and written to ``out_dir`` as a quantize job streams it
    (without the job's calibration, histograms and report), its codes spooled in
    ``spool_dir``: the quantized model (its codes views of the spool's file, which the caller
    removes with ``spool_dir`` once done with them) and the files written."""
    spool = CodeSpool(spool_dir, model.format)
    try:
        qmodel = quantize_streamed(model, spec, spool)
        written = write_streamed(qmodel, spool, out_dir, build_skeleton(qmodel))
    finally:
        spool.close()
    return qmodel, written


def _maker(spool: CodeSpool, weight: CodedWeight, elem_type: int) -> Any:
    def make() -> bytes:
        data = code_raw_data(weight.codes, elem_type)
        spool.release(weight)
        return data

    return make
