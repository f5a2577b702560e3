"""The artifacts of a quantized model in memory: the model in its input's format
(``model.onnx``, or ``model.safetensors`` / ``model.npz`` with the quantized arrays
dequantized) and ``model.qpack``. ``quantcore.compress.stream`` writes the same bytes for a
model larger than memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantcore.compress.pipeline import CodedWeight, QuantizedModel, build_onnx, package
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_writer import WrittenModel, save_onnx, serialize_inline
from quantcore.formats.weights_io import WeightsModel, write_npz, write_safetensors_streamed


@dataclass(frozen=True, kw_only=True)
class Artifacts:
    paths: tuple[Path, ...]
    sizes: dict[str, int]
    model_path: Path  # model.onnx, model.safetensors or model.npz
    write_s: float

    @classmethod
    def written(cls, paths: tuple[Path, ...], model_path: Path, start: float) -> Artifacts:
        """The files at ``paths``, written since ``start`` (``time.perf_counter``)."""
        return cls(paths=paths, sizes={p.name: p.stat().st_size for p in paths},
                   model_path=model_path, write_s=time.perf_counter() - start)  # fmt: skip


def write_artifacts(
    qmodel: QuantizedModel, out_dir: Path, written: WrittenModel | None = None
) -> Artifacts:
    """Write the quantized model (same format as the input) and ``model.qpack``.

    ``written`` is ``build_onnx(qmodel)`` when the caller built it already (a job builds it,
    then closes the source model to free its floats before writing).
    """
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = written or build_onnx(qmodel)
    source = qmodel.source
    if isinstance(source, WeightsModel):
        model_path = out_dir / f"model.{source.format.value}"
        write_weights(qmodel, source, model_path)
        paths: tuple[Path, ...] = (model_path,)
        onnx_bytes: bytes | None = None
    else:
        model_path = out_dir / "model.onnx"
        onnx_bytes = serialize_inline(written.proto)
    # Packed before saving: saving with external data moves the tensors out of the proto.
    data = package(qmodel, written, onnx_bytes).data
    if not isinstance(source, WeightsModel):
        paths = save_onnx(written.proto, model_path, onnx_bytes)
    qpack_path = out_dir / "model.qpack"
    qpack_path.write_bytes(data)
    return Artifacts.written((*paths, qpack_path), model_path, start)


def write_weights(
    qmodel: QuantizedModel, source: WeightsModel, path: Path,
    done: Callable[[CodedWeight], None] | None = None,
) -> None:
    """``model.safetensors`` or ``model.npz``: every array of ``source`` in its order and
    dtype, the quantized ones dequantized, one at a time (``done`` is called with each
    quantized tensor once it is written: a streamed model's codes drop their pages then)."""
    coded = qmodel.coded

    def arrays() -> Iterator[np.ndarray]:
        for tensor in source.tensors:
            original = source.array(tensor.name)
            weight = coded.get(tensor.name)
            if weight is None:
                yield original
                continue
            yield weight.dequantized().astype(original.dtype)
            if done is not None:
                done(weight)

    if source.format is ModelFormat.SAFETENSORS:
        layout = [(t.name, source.array(t.name).dtype, t.shape) for t in source.tensors]
        write_safetensors_streamed(path, layout, arrays(), source.metadata)
    else:
        write_npz(path, zip([t.name for t in source.tensors], arrays(), strict=True))
