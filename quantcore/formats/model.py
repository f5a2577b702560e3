"""What a reader hands the pipeline: the tensors of a model and a way to load each one."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

from quantcore.formats.roles import Candidate, Role


class ModelFormat(StrEnum):
    ONNX = "onnx"
    SAFETENSORS = "safetensors"
    NPZ = "npz"


SUFFIXES = {
    ".onnx": ModelFormat.ONNX,
    ".safetensors": ModelFormat.SAFETENSORS,
    ".npz": ModelFormat.NPZ,
}
# Both directions as plain strings, for callers that speak JSON: ".onnx" <-> "onnx".
MODEL_SUFFIXES: dict[str, str] = {suffix: fmt.value for suffix, fmt in SUFFIXES.items()}
FORMAT_SUFFIX: dict[str, str] = {fmt.value: suffix for suffix, fmt in SUFFIXES.items()}


@dataclass(frozen=True, kw_only=True)
class WeightTensor:
    """One tensor of a model, where it lives and what it does.

    ``name`` is unique within the model (a tensor name that occurs in two subgraphs is
    qualified with the subgraph's path); ``where`` says where it lives, for reports.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: Role
    channel_axis: int | None
    used_by: str
    where: str
    block_axis: int | None = None  # the axis its operator sums over (``roles``)
    block_trailing: bool = False  # and the axes after it too (a Conv kernel's window)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def candidate(self) -> Candidate:
        return Candidate(
            name=self.name, dtype=self.dtype, size=self.size, role=self.role, used_by=self.used_by
        )


class LazyArrays(Mapping[str, np.ndarray]):
    """A weights file's arrays, each read when asked for (and dropped by the caller), and
    what each is from the file's headers alone."""

    @abstractmethod
    def layout(self) -> Iterator[tuple[str, tuple[int, ...], np.dtype]]:
        """Each array's name, shape and dtype, in file order, without reading it."""


class LoadedModel(Protocol):
    """A model read from disk: its tensors, and their values on demand (original dtype)."""

    @property
    def format(self) -> ModelFormat: ...

    @property
    def tensors(self) -> tuple[WeightTensor, ...]: ...

    def array(self, name: str, *, aligned: bool = True) -> np.ndarray:
        """Tensor ``name``'s values; ``aligned=False`` allows a view of bytes that lie off
        their item size (NumPy reads it; compiled kernels do not)."""
        ...

    def close(self) -> None: ...
