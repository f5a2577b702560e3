"""The runnable containers of codes: which ONNX integer type holds a tensor's codes at an
opset, and the bytes of such a tensor (4-bit types packed two to a byte, low nibble first)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from quantcore.coding.packing import pack_bits

_FOUR_BIT = frozenset({TensorProto.INT4, TensorProto.UINT4})


def container_name(elem_type: int) -> str:
    """``int4``, ``uint8``, ...: the runnable container of a code tensor."""
    return str(helper.tensor_dtype_to_string(elem_type)).removeprefix("TensorProto.").lower()


def storage_type(code_min: int, code_max: int, *, signed: bool, opset: int) -> int:
    """The narrowest ONNX integer type for codes in ``[code_min, code_max]`` at ``opset``."""
    four_bit = opset >= 21
    if signed and code_min < 0:
        if four_bit and code_min >= -8 and code_max <= 7:
            return TensorProto.INT4
        if code_min >= -128 and code_max <= 127:
            return TensorProto.INT8
        if code_min >= -32768 and code_max <= 32767:
            return TensorProto.INT16
        return TensorProto.INT32
    if four_bit and code_max <= 15:
        return TensorProto.UINT4
    if code_max <= 255:
        return TensorProto.UINT8
    if code_max <= 65535:
        return TensorProto.UINT16
    return TensorProto.INT32


def code_raw_data(codes: np.ndarray, elem_type: int) -> bytes:
    """The ``raw_data`` bytes of ``codes`` stored as ``elem_type`` (4-bit: two per byte, low
    nibble first, as ONNX requires)."""
    if elem_type in _FOUR_BIT:
        return pack_bits(np.bitwise_and(codes, 0xF).astype(np.uint8), 4)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).newbyteorder("<")
    return np.ascontiguousarray(codes, dtype=dtype).tobytes()
