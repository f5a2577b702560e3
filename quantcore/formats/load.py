"""Reading any supported model file, by its suffix."""

from __future__ import annotations

from pathlib import Path

from quantcore.errors import InvalidModelError
from quantcore.formats.model import SUFFIXES, ModelFormat
from quantcore.formats.onnx_reader import OnnxModel, load_onnx
from quantcore.formats.weights_io import WeightsModel, read_npz, read_safetensors
from quantcore.limits import InputLimits

Model = OnnxModel | WeightsModel


def model_format(path: Path) -> ModelFormat:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(SUFFIXES)
        raise InvalidModelError(f"{path.name}: unknown model format {path.suffix!r}; use {known}")
    return fmt


def load_model(path: Path, limits: InputLimits | None = None) -> Model:
    """Read the model at ``path`` by its suffix (``.onnx``, ``.safetensors``, ``.npz``); the
    sizes it declares are checked before memory is taken, against ``limits`` when given."""
    if path.is_dir():
        raise InvalidModelError(f"{path}: a folder, not a model file")
    fmt = model_format(path)
    if fmt is ModelFormat.ONNX:
        return load_onnx(path, limits)
    if fmt is ModelFormat.SAFETENSORS:
        return read_safetensors(path, limits)
    return read_npz(path, limits)
