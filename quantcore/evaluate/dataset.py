"""Evaluation sets: an ``.npz`` checked against a model before any work starts, then streamed.

Layout of a set:

- one array per model input, named after the input; a model with a single input also accepts
  a single array of any name;
- optionally ``labels``: integer class indices, one per sample (rank 1);
- axis 0 of every array is the sample axis, and all arrays have the same number of samples.

``check_dataset`` compares the set with the model's graph inputs and raises
``InvalidDatasetError`` naming the array and what differs: a missing or unexpected array, a
dtype of another kind (float data for a float input is accepted and cast, e.g. float64 for
float32; anything else must match), a rank, a fixed dimension, a sample count, labels that are
not integers or fall outside ``[0, classes)`` (``classes`` from the scores output's static width
when the model declares it), an empty set, NaN or infinity in the inputs.

Memory stays bounded whatever the size of the set: every size the archive declares is checked
before it is read (``quantcore.formats.npz``), and arrays are never loaded whole. Each
``.npy`` member of the archive is read row block by row block straight from the zip stream
(``EvalSet.batches``); the one exception is a Fortran-ordered array, whose rows are not
contiguous on disk, which is loaded whole.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx
from onnx import helper

from quantcore.errors import InvalidDatasetError, InvalidModelError
from quantcore.formats.npz import ARCHIVE_ERRORS, READ_ERRORS, read_npy_header, scan_npz
from quantcore.formats.onnx_reader import read_graph
from quantcore.limits import InputLimits


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """What an uploaded evaluation set holds: its arrays' names and shapes."""

    arrays: dict[str, tuple[int, ...]]


LABELS = "labels"
# Rows read per block while scanning a set for NaN: a few MB at most for typical inputs.
_SCAN_BATCH = 1024


@dataclass(frozen=True, kw_only=True)
class ArrayHeader:
    """What an ``.npy`` member's header says: enough to check it without reading the data."""

    member: str  # the zip member, e.g. "x.npy"
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    fortran_order: bool


@dataclass(frozen=True, kw_only=True)
class ModelInput:
    """One graph input: its name, element dtype and dimensions (int fixed, None symbolic)."""

    name: str
    dtype: np.dtype[Any]
    dims: tuple[int | None, ...]

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model insists on, or None when axis 0 is symbolic."""
        return self.dims[0] if self.dims else None


@dataclass(frozen=True, kw_only=True)
class EvalSet:
    """A set checked against a model: which array feeds which input, how many samples."""

    path: Path
    inputs: tuple[ModelInput, ...]
    arrays: tuple[ArrayHeader, ...]  # arrays[i] feeds inputs[i]
    labels: ArrayHeader | None
    samples: int
    classes: int | None  # the scores output's static width, when declared

    @property
    def fixed_batch(self) -> int | None:
        """The batch size every input insists on (1 means sample by sample), or None."""
        fixed = {i.fixed_batch for i in self.inputs if i.fixed_batch is not None}
        return fixed.pop() if fixed else None

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """Yield ``(feeds, labels)`` blocks of at most ``batch_size`` samples, in order.

        Feeds are cast to the inputs' dtypes (an integer array to another integer type only
        where its values fit); labels are int64 (or None without labels).
        """
        if batch_size < 1:
            raise InvalidDatasetError(f"{batch_size=} must be at least 1")
        with zipfile.ZipFile(self.path) as archive, ExitStack() as stack:
            readers = [
                stack.enter_context(_RowReader(archive, header, batch_size))
                for header in self.arrays
            ]
            label_reader = (
                stack.enter_context(_RowReader(archive, self.labels, batch_size))
                if self.labels is not None
                else None
            )
            for start in range(0, self.samples, batch_size):
                n = min(batch_size, self.samples - start)
                feeds = {
                    spec.name: _cast(reader.read(n), spec)
                    for spec, reader in zip(self.inputs, readers, strict=True)
                }
                labels = None
                if label_reader is not None:
                    labels = label_reader.read(n).astype(np.int64, copy=False)
                yield feeds, labels


def _cast(block: np.ndarray, spec: ModelInput) -> np.ndarray:
    """``block`` in the input's dtype; integers that the model's integer type cannot hold
    are refused (a cast would wrap them silently)."""
    if block.dtype != spec.dtype and spec.dtype.kind in "iu" and block.size:
        lo, hi = int(block.min()), int(block.max())
        limits = np.iinfo(spec.dtype)
        if lo < limits.min or hi > limits.max:
            raise InvalidDatasetError(
                f"input {spec.name!r}: values {lo} to {hi} ({block.dtype}) do not fit the "
                f"model's {spec.dtype} ({limits.min} to {limits.max})"
            )
    return block.astype(spec.dtype, copy=False)


class _RowReader:
    """Reads consecutive rows (axis-0 slices) of one ``.npy`` member of an open archive."""

    def __init__(self, archive: zipfile.ZipFile, header: ArrayHeader, batch_size: int) -> None:
        self._archive = archive
        self._header = header
        self._row_shape = header.shape[1:]
        self._row_bytes = int(np.prod(self._row_shape, dtype=np.int64)) * header.dtype.itemsize
        self._stream: IO[bytes] | None = None
        self._whole: np.ndarray | None = None
        self._pos = 0

    def __enter__(self) -> _RowReader:
        stream = self._archive.open(self._header.member)
        if self._header.fortran_order:
            # Rows of a Fortran-ordered array are scattered on disk: load it whole.
            with stream:
                try:
                    self._whole = np.lib.format.read_array(stream, allow_pickle=False)
                except READ_ERRORS as exc:
                    raise InvalidDatasetError(
                        f"array {self._header.member!r} cannot be read: {exc}") from None
        else:
            read_npy_header(stream, repr(self._header.member), InvalidDatasetError)
            self._stream = stream
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.close()

    def read(self, n: int) -> np.ndarray:
        if self._whole is not None:
            block = self._whole[self._pos : self._pos + n]
        else:
            assert self._stream is not None  # set in __enter__
            try:
                data = self._stream.read(n * self._row_bytes)
            except ARCHIVE_ERRORS as exc:  # a set not inflated once when it was checked
                raise InvalidDatasetError(
                    f"array {self._header.member!r} cannot be inflated: {exc}") from None
            if len(data) != n * self._row_bytes:
                got = self._pos + len(data) // max(self._row_bytes, 1)
                raise InvalidDatasetError(
                    f"array {self._header.member!r} is truncated: it declares "
                    f"{self._header.shape[0]} rows but ends after {got}"
                )
            block = np.frombuffer(data, dtype=self._header.dtype).reshape((n, *self._row_shape))
        self._pos += n
        return block


def read_headers(
    path: Path, limits: InputLimits | None = None, *, verify: bool = False
) -> dict[str, ArrayHeader]:
    """The arrays of an ``.npz`` (name -> header), reading headers only; every size they
    declare is checked against ``limits`` and against the archive (``quantcore.formats.npz``;
    ``verify`` also inflates each compressed member once, in bounded memory)."""
    members = scan_npz(Path(path), limits, error=InvalidDatasetError, verify=verify)
    return {
        m.name: ArrayHeader(member=m.member, dtype=m.dtype, shape=m.shape,
                            fortran_order=m.fortran_order)
        for m in members
    }


def inspect_dataset(path: Path, limits: InputLimits | None = None) -> DatasetInfo:
    """Array names and shapes of an uploaded ``.npz`` (what ``POST /v1/datasets`` answers),
    its sizes checked against ``limits`` and every compressed member inflated once."""
    headers = read_headers(Path(path), limits, verify=True)
    return DatasetInfo(arrays={name: h.shape for name, h in headers.items()})


def model_inputs(model: onnx.ModelProto) -> tuple[ModelInput, ...]:
    """The graph inputs a caller must feed (initializers listed as inputs excluded)."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise InvalidDatasetError(
                f"model input {value.name!r} is not a tensor; only tensor inputs can be fed "
                "from an .npz"
            )
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        # A negative or zero size (some exporters write -1) is as good as symbolic.
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in tensor.shape.dim)
        inputs.append(ModelInput(name=value.name, dtype=dtype, dims=dims))
    return tuple(inputs)


def scores_output(model: onnx.ModelProto) -> tuple[str, int | None] | None:
    """The output read as class scores: the first float output of rank 2, and its width."""
    for value in model.graph.output:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or len(tensor.shape.dim) != 2:
            continue
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        if dtype.kind == "f":
            last = tensor.shape.dim[1]
            return value.name, (last.dim_value if last.HasField("dim_value") else None)
    return None


def check_dataset(
    model: onnx.ModelProto | Path, dataset_path: Path, limits: InputLimits | None = None
) -> EvalSet:
    """Check an evaluation set against a model, before any work; see the module docstring.

    Reads array headers (their sizes checked against ``limits``), then streams the inputs once
    to look for NaN and infinity and the labels once to check their range. Raises
    ``InvalidDatasetError`` naming what differs.
    """
    if not isinstance(model, onnx.ModelProto):
        try:
            model = read_graph(Path(model))  # the graph: the weights stay in the file
        except Exception as exc:  # onnx raises DecodeError, OSError, ...: all mean unreadable
            raise InvalidModelError(f"model {Path(model).name!r} cannot be read: {exc}") from None
    dataset_path = Path(dataset_path)
    headers = read_headers(dataset_path, limits)
    inputs = model_inputs(model)
    if not inputs:
        raise InvalidDatasetError("the model has no inputs to feed from a dataset")
    labels = headers.pop(LABELS, None)
    arrays = _match_arrays(inputs, headers)
    samples = _check_shapes(inputs, arrays)
    scores = scores_output(model)
    classes = scores[1] if scores else None
    if labels is not None:
        _check_labels_header(labels, samples)
    evalset = EvalSet(
        path=dataset_path,
        inputs=inputs,
        arrays=arrays,
        labels=labels,
        samples=samples,
        classes=classes,
    )
    _scan_values(evalset)
    return evalset


def _match_arrays(
    inputs: tuple[ModelInput, ...], headers: dict[str, ArrayHeader]
) -> tuple[ArrayHeader, ...]:
    names = [i.name for i in inputs]
    if len(inputs) == 1 and len(headers) == 1:
        return (next(iter(headers.values())),)
    missing = [n for n in names if n not in headers]
    extra = sorted(set(headers) - set(names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no array for model input(s) {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"unexpected array(s) {', '.join(map(repr, extra))}")
        raise InvalidDatasetError(
            f"dataset does not fit the model: {'; '.join(parts)} (the model's inputs are "
            f"{', '.join(map(repr, names))}; labels go in an array named {LABELS!r})"
        )
    return tuple(headers[n] for n in names)


def _check_shapes(inputs: tuple[ModelInput, ...], arrays: tuple[ArrayHeader, ...]) -> int:
    samples: int | None = None
    for spec, header in zip(inputs, arrays, strict=True):
        where = f"input {spec.name!r} (array {header.member[:-4]!r})"
        # Floats cast to the model's float type; integers to its integer type where they fit
        # (checked as the values are read: numpy's default int64 for an int32 input, say).
        integers = header.dtype.kind in "iu" and spec.dtype.kind in "iu"
        ok = header.dtype.kind == "f" if spec.dtype.kind == "f" else (
            integers or header.dtype == spec.dtype)
        if not ok:
            raise InvalidDatasetError(
                f"{where}: dtype {header.dtype} does not fit the model's {spec.dtype}"
            )
        if len(header.shape) != len(spec.dims):
            raise InvalidDatasetError(
                f"{where}: rank {len(header.shape)} (shape {header.shape}) but the model "
                f"expects rank {len(spec.dims)} (shape {_dims_text(spec.dims)})"
            )
        if not spec.dims:
            raise InvalidDatasetError(
                f"{where}: the model's input is a scalar; a dataset needs a sample axis"
            )
        for axis, (want, got) in enumerate(zip(spec.dims, header.shape, strict=True)):
            if axis > 0 and want is not None and want != got:
                raise InvalidDatasetError(
                    f"{where}: dimension {axis} is {got} but the model fixes it to {want} "
                    f"(model shape {_dims_text(spec.dims)}, array shape {header.shape})"
                )
        if samples is not None and header.shape[0] != samples:
            raise InvalidDatasetError(
                f"{where}: {header.shape[0]} samples, but other inputs have {samples}"
            )
        samples = header.shape[0]
    assert samples is not None  # inputs is non-empty
    if samples == 0:
        raise InvalidDatasetError("the dataset is empty: its arrays have 0 samples")
    return samples


def _check_labels_header(labels: ArrayHeader, samples: int) -> None:
    if labels.dtype.kind not in "iu":
        raise InvalidDatasetError(
            f"labels: dtype {labels.dtype} is not an integer type; labels are class indices"
        )
    if len(labels.shape) != 1:
        raise InvalidDatasetError(
            f"labels: shape {labels.shape} must be one class index per sample, rank 1"
        )
    if labels.shape[0] != samples:
        raise InvalidDatasetError(
            f"labels: {labels.shape[0]} labels for {samples} samples; there must be one each"
        )


def _scan_values(evalset: EvalSet) -> None:
    """Reject NaN/infinity in float inputs, labels outside [0, classes) and integers that
    the model's integer inputs cannot hold (``_cast``, as the batches are read)."""
    bad = dict.fromkeys((i.name for i in evalset.inputs), 0)
    low = high = None
    for feeds, labels in evalset.batches(_SCAN_BATCH):
        for name, block in feeds.items():
            if block.dtype.kind == "f":
                bad[name] += int(block.size - np.count_nonzero(np.isfinite(block)))
        if labels is not None and labels.size:
            lo, hi = int(labels.min()), int(labels.max())
            low = lo if low is None else min(low, lo)
            high = hi if high is None else max(high, hi)
    for name, count in bad.items():
        if count:
            raise InvalidDatasetError(
                f"input {name!r}: {count} value(s) are NaN or infinite; evaluation needs "
                "finite inputs"
            )
    if low is not None and low < 0:
        raise InvalidDatasetError(f"labels: {low} is negative; labels are class indices >= 0")
    if high is not None and evalset.classes is not None and high >= evalset.classes:
        raise InvalidDatasetError(
            f"labels: {high} is out of range for a model with {evalset.classes} classes "
            f"(labels must be in [0, {evalset.classes - 1}])"
        )


def _dims_text(dims: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
