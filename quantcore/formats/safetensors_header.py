"""A safetensors file's header, every field checked before any tensor is mapped.

Layout: 8 bytes little-endian ``n``, ``n`` bytes of JSON (an object: tensor name ->
``{"dtype", "shape", "data_offsets": [begin, end]}``, and an optional ``__metadata__`` object
of strings), then the data section, offsets counted from its start.

Refused with ``InvalidModelError`` naming the tensor and the field: a header longer than the
file or than ``max_header_bytes`` (``InputTooLargeError``), JSON nested deeper than
``max_json_depth`` (measured before parsing), a header that is not an object, ``__metadata__``
that is not an object of strings, an unknown dtype, a shape that is not a list of whole
numbers >= 0 (floats, booleans and negatives refused), offsets that are not two whole
numbers with ``0 <= begin <= end <= data section``, a byte range whose length is not the
shape's bytes, two tensors whose ranges overlap, and a tensor over ``max_array_bytes``
(``InputTooLargeError``).
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from quantcore.checks import json_depth
from quantcore.errors import InputTooLargeError, InvalidModelError
from quantcore.limits import UNLIMITED, InputLimits, describe_bytes

SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}
METADATA = "__metadata__"


@dataclass(frozen=True, kw_only=True)
class TensorEntry:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    begin: int  # offsets in the data section
    end: int


@dataclass(frozen=True, kw_only=True)
class SafetensorsHeader:
    data_offset: int  # where the data section starts in the file: 8 + header length
    data_bytes: int
    metadata: dict[str, str]
    tensors: tuple[TensorEntry, ...]  # in header order


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_header(path: Path, limits: InputLimits | None = None) -> SafetensorsHeader:
    """The checked header of the safetensors file at ``path`` (module docstring)."""
    limits = limits or UNLIMITED
    label = path.name
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InvalidModelError(f"{label} is not a safetensors file: {size} bytes")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise InvalidModelError(
                f"{label} is not a safetensors file (header length {n} > file size {size})"
            )
        if n > limits.max_header_bytes:
            raise InputTooLargeError(
                f"{label}: the safetensors header is {describe_bytes(n)}, over the limit of "
                f"{describe_bytes(limits.max_header_bytes)} (max_header_bytes)",
                details={"bytes": n, "limit_bytes": limits.max_header_bytes,
                         "limit": "max_header_bytes"},
            )
        text = handle.read(n)
    depth = json_depth(text)
    if depth > limits.max_json_depth:
        raise InvalidModelError(
            f"{label}: the safetensors header nests {depth} levels deep; at most "
            f"{limits.max_json_depth} are accepted (max_json_depth)",
            details={"depth": depth, "limit_depth": limits.max_json_depth},
        )
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidModelError(f"{label}: safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidModelError(f"{label}: safetensors header is not a JSON object")
    metadata = _metadata(label, header.pop(METADATA, None))
    data_bytes = size - 8 - n
    tensors = tuple(_entry(label, name, info, data_bytes, limits) for name, info in header.items())
    _check_overlaps(label, tensors)
    return SafetensorsHeader(data_offset=8 + n, data_bytes=data_bytes, metadata=metadata,
                             tensors=tensors)


def _metadata(label: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidModelError(f"{label}: {METADATA} must be an object of strings, got "
                                f"{type(value).__name__}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidModelError(
                f"{label}: {METADATA}[{key!r}] is {type(item).__name__}; metadata values are "
                "strings"
            )
    return value


def _entry(
    label: str, name: str, info: Any, data_bytes: int, limits: InputLimits
) -> TensorEntry:
    where = f"{label}: tensor {name!r}"
    if not isinstance(info, dict):
        raise InvalidModelError(f"{where}: its entry is {type(info).__name__}, not an object")
    code = info.get("dtype")
    dtype = SAFETENSORS_DTYPES.get(code) if isinstance(code, str) else None
    if dtype is None:
        raise InvalidModelError(f"{where}: dtype {info.get('dtype')!r} is not one of "
                                f"{', '.join(SAFETENSORS_DTYPES)}")
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(_whole(d) for d in shape):
        raise InvalidModelError(
            f"{where}: shape {shape!r} must be a list of whole numbers >= 0"
        )
    offsets = info.get("data_offsets")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(v) for v in offsets):
        raise InvalidModelError(
            f"{where}: data_offsets {offsets!r} must be two whole numbers >= 0 [begin, end]"
        )
    begin, end = offsets
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limits.max_array_bytes:
        raise InputTooLargeError(
            f"{where} declares shape {tuple(shape)} of {dtype.name}: {describe_bytes(nbytes)}, "
            f"over the limit of {describe_bytes(limits.max_array_bytes)} (max_array_bytes)",
            details={"tensor": name, "bytes": nbytes, "limit_bytes": limits.max_array_bytes,
                     "limit": "max_array_bytes"},
        )
    if begin > end or end > data_bytes:
        raise InvalidModelError(
            f"{where}: bytes [{begin}, {end}) lie outside the {data_bytes}-byte data section "
            "(truncated?)"
        )
    if end - begin != nbytes:
        raise InvalidModelError(
            f"{where}: shape {tuple(shape)} of {dtype.name} needs {nbytes} bytes but its "
            f"offsets [{begin}, {end}) hold {end - begin}"
        )
    return TensorEntry(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _check_overlaps(label: str, tensors: tuple[TensorEntry, ...]) -> None:
    ranges = sorted((t.begin, t.end, t.name) for t in tensors if t.end > t.begin)
    for (_, end, first), (begin, _, second) in itertools.pairwise(ranges):
        if begin < end:
            raise InvalidModelError(
                f"{label}: tensors {first!r} and {second!r} overlap in the data section "
                f"(at byte {begin})"
            )
