"""Every size a caller's file declares is checked before memory is taken: each check refuses
just over its limit and accepts just under (or at) it, and a file whose sizes do not add up
is refused by name whatever the limits."""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantcore import (
    InputLimits,
    InputTooLargeError,
    InvalidDatasetError,
    InvalidModelError,
    QuantError,
    UnsafeExternalDataError,
    inspect_dataset,
    inspect_model,
    json_depth,
)
from quantcore.formats.load import load_model
from quantcore.formats.npz import scan_npz
from quantcore.limits import INFLATION_RATIO_FLOOR
from tests import bad_files as bf

SMALL = InputLimits(max_array_bytes=1000, max_inflated_bytes=4000, max_npz_members=3,
                    max_header_bytes=400, max_json_depth=8)


@dataclass(frozen=True)
class Bad:
    name: str
    suffix: str
    data: Callable[[], bytes]
    error: type[QuantError] | None  # None: accepted
    fragment: str = ""
    limits: InputLimits = SMALL


def _u8(n: int) -> bytes:
    return bf.npy(np.zeros(n, np.uint8))


def _header_len() -> int:
    return len(bf.npy_header((1,), "|u1"))


MODEL_CASES = [
    # .npz: an array's declared bytes
    Bad("npy claims (2**30, 1024) float64 in 300 bytes", ".npz", bf.claiming_npz,
        InputTooLargeError, "array 'x' declares shape (1073741824, 1024) of float64"),
    Bad("npy claim under an unlimited reader: sizes do not add up", ".npz", bf.claiming_npz,
        InvalidModelError, "but the member holds 64 bytes", InputLimits(
            max_array_bytes=1 << 62, max_inflated_bytes=1 << 62)),
    Bad("npy array at max_array_bytes", ".npz", lambda: bf.npz({"w.npy": _u8(1000)}), None),
    Bad("npy array one byte over", ".npz", lambda: bf.npz({"w.npy": _u8(1001)}),
        InputTooLargeError, "1001 bytes"),
    Bad("npy negative dimension", ".npz",
        lambda: bf.npz({"w.npy": bf.npy_header((-5, 2))}), InvalidModelError,
        "negative dimension"),
    Bad("npz members at max_npz_members", ".npz",
        lambda: bf.npz({f"w{i}.npy": _u8(4) for i in range(3)}), None),
    Bad("npz members one over", ".npz",
        lambda: bf.npz({f"w{i}.npy": _u8(4) for i in range(4)}), InputTooLargeError,
        "at most 3 members"),
    Bad("npz inflated total at max_inflated_bytes", ".npz",
        lambda: bf.npz({"a.npy": _u8(1000), "b.npy": _u8(4000 - 1000 - 2 * _header_len())}),
        None, "", dataclasses.replace(SMALL, max_array_bytes=4000)),
    Bad("npz inflated total one byte over", ".npz",
        lambda: bf.npz({"a.npy": _u8(1001), "b.npy": _u8(4000 - 1000 - 2 * _header_len())}),
        InputTooLargeError, "max_inflated_bytes", dataclasses.replace(SMALL, max_array_bytes=4000)),
    Bad("npz bzip2 member", ".npz",
        lambda: bf.npz({"w.npy": _u8(10)}, method=zipfile.ZIP_BZIP2), InvalidModelError,
        "compressed with bzip2"),
    Bad("npz member not .npy", ".npz", lambda: bf.npz({"w.txt": b"x"}), InvalidModelError,
        "is not a .npy array"),
    Bad("npz member twice", ".npz",
        lambda: _twice(), InvalidModelError,
        "appear twice"),
    Bad("npz member inflating past its declared size", ".npz", bf.lying_npz,
        InvalidModelError, "cannot be inflated: Bad CRC-32", dataclasses.replace(
            SMALL, max_array_bytes=10_000, max_inflated_bytes=20_000)),
    Bad("npz not a zip", ".npz", lambda: b"PK nothing", InvalidModelError, "not an .npz"),
    # zlib's own error, which used to escape as an internal one.
    Bad("npz deflate stream broken", ".npz", bf.corrupt_deflate_npz, InvalidModelError,
        "Error -3 while decompressing data"),
    # safetensors
    Bad("st tensor at max_array_bytes", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([250], 0, 1000)}, bytes(1000)), None),
    Bad("st tensor one element over", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([251], 0, 1004)}, bytes(1004)),
        InputTooLargeError, "tensor 'w' declares shape (251,)"),
    Bad("st negative offset", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([4], -16, 0)}, bytes(16)),
        InvalidModelError, "data_offsets [-16, 0] must be two whole numbers"),
    Bad("st float offset", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([4], 0.0, 16)}, bytes(16)),
        InvalidModelError, "data_offsets"),
    Bad("st begin after end", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([0], 16, 8)}, bytes(16)),
        InvalidModelError, "outside the 16-byte data section"),
    Bad("st offsets outside the file", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([4], 8, 24)}, bytes(16)),
        InvalidModelError, "bytes [8, 24) lie outside the 16-byte data section"),
    Bad("st overlapping tensors", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([4], 0, 16), "v": bf.f32_entry([2], 8, 16)},
                               bytes(16)), InvalidModelError, "overlap"),
    Bad("st float shape", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([2.0, 2], 0, 16)}, bytes(16)),
        InvalidModelError, "shape [2.0, 2] must be a list of whole numbers"),
    Bad("st boolean shape", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([True], 0, 4)}, bytes(4)),
        InvalidModelError, "must be a list of whole numbers"),
    Bad("st negative shape", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([-4], 0, 16)}, bytes(16)),
        InvalidModelError, "must be a list of whole numbers"),
    Bad("st shape bytes differ from the range", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([3], 0, 16)}, bytes(16)),
        InvalidModelError, "needs 12 bytes but its offsets [0, 16) hold 16"),
    Bad("st unknown dtype", ".safetensors",
        lambda: bf.safetensors({"w": bf.f32_entry([4], 0, 16, dtype="F128")}, bytes(16)),
        InvalidModelError, "dtype 'F128'"),
    Bad("st metadata value not a string", ".safetensors",
        lambda: bf.safetensors({"__metadata__": {"a": [1]}, "w": bf.f32_entry([4], 0, 16)},
                               bytes(16)), InvalidModelError, "__metadata__['a'] is list"),
    Bad("st metadata not an object", ".safetensors",
        lambda: bf.safetensors({"__metadata__": "x"}, b""), InvalidModelError,
        "must be an object of strings"),
    Bad("st header at max_json_depth: past the depth check", ".safetensors",
        lambda: bf.safetensors(b'{"x": ' + bf.nested_json(7) + b"}"), InvalidModelError,
        "tensor 'x': dtype None"),
    Bad("st header one level too deep", ".safetensors",
        lambda: bf.safetensors(b'{"x": ' + bf.nested_json(8) + b"}"), InvalidModelError,
        "nests 9 levels deep; at most 8"),
    Bad("st header nested 100000 deep (unlimited reader)", ".safetensors",
        lambda: bf.safetensors(b"[" * 100_000 + b"]" * 100_000), InvalidModelError,
        "nests 100000 levels deep", InputLimits(max_header_bytes=1 << 30)),
    Bad("st header at max_header_bytes", ".safetensors",
        lambda: bf.safetensors(_metadata_header(400)), None),
    Bad("st header one byte over", ".safetensors",
        lambda: bf.safetensors(_metadata_header(401)),
        InputTooLargeError, "max_header_bytes"),
    Bad("st header longer than the file", ".safetensors",
        lambda: bf.safetensors(b"{}")[:9], InvalidModelError, "header length 2 > file size 9"),
    # ONNX
    Bad("onnx tensor at max_array_bytes", ".onnx",
        lambda: bf.onnx_with(bf.raw_tensor([64, 64], bytes(16384))), None, "",
        dataclasses.replace(SMALL, max_array_bytes=16384)),
    Bad("onnx tensor one byte over", ".onnx",
        lambda: bf.onnx_with(bf.raw_tensor([64, 64], bytes(16384))), InputTooLargeError,
        "initializer 'fc0.weight' of graph declares dims [64, 64] of TensorProto.FLOAT: 16384",
        dataclasses.replace(SMALL, max_array_bytes=16383)),
    Bad("onnx dims 2**40", ".onnx", lambda: bf.onnx_with(bf.raw_tensor([2**20, 2**20], b"")),
        InputTooLargeError, "declares dims [1048576, 1048576]", InputLimits()),
    Bad("onnx dims whose product passes 2**64", ".onnx",
        lambda: bf.onnx_with(bf.raw_tensor([2**62, 2**62], b"")), InputTooLargeError,
        "over the limit", InputLimits()),
    Bad("onnx negative dim", ".onnx", lambda: bf.onnx_with(bf.raw_tensor([-16, 4], b"")),
        InvalidModelError, "dims [-16, 4]: a negative dimension"),
    Bad("onnx element type 0 (undefined)", ".onnx",
        lambda: bf.onnx_with(bf.raw_tensor([16, 4], bytes(256), data_type=0)), InvalidModelError,
        "'fc0.weight' of graph has element type 0, which ONNX does not define"),
    Bad("onnx element type past the enum", ".onnx",
        lambda: bf.onnx_with(bf.raw_tensor([16, 4], bytes(256), data_type=110)),
        InvalidModelError, "has element type 110, which ONNX does not define"),
    Bad("onnx operator name not UTF-8", ".onnx", bf.onnx_with_undecodable_operator,
        InvalidModelError, "operator's name or domain is not valid UTF-8"),
    Bad("onnx raw data shorter than dims", ".onnx",
        lambda: bf.onnx_with(bf.raw_tensor([16, 4], bytes(8))), InvalidModelError,
        "holds 8 bytes of data but dims [16, 4] need 256"),
    Bad("onnx typed data shorter than dims", ".onnx",
        lambda: bf.onnx_with(bf.typed_tensor([16, 4], [1.0] * 3)), InvalidModelError,
        "holds 3 values but dims [16, 4] need 64"),
    Bad("onnx external length over the limit", ".onnx",
        lambda: bf.onnx_with(bf.external_tensor([2**30, 2**10], length=str(2**42))),
        InputTooLargeError, "max_array_bytes", InputLimits()),
    Bad("onnx external length not the tensor's", ".onnx",
        lambda: bf.onnx_with(bf.external_tensor([16, 4], length="12")),
        UnsafeExternalDataError, "length=12 bytes, but the tensor's dims and type need 256"),
    Bad("onnx external negative offset", ".onnx",
        lambda: bf.onnx_with(bf.external_tensor([16, 4], offset="-1")),
        UnsafeExternalDataError, "offset=-1 is negative"),
    Bad("onnx external offset not a number", ".onnx",
        lambda: bf.onnx_with(bf.external_tensor([16, 4], offset="1e3")),
        UnsafeExternalDataError, "offset='1e3' is not a number"),
]


def _metadata_header(n: int) -> bytes:
    head, tail = b'{"__metadata__": {"a": "', b'"}}'
    return head + b"x" * (n - len(head) - len(tail)) + tail


def _twice() -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("w.npy", _u8(4))
        archive.writestr("w.npy", _u8(4))
    return buf.getvalue()


def _check(case: Bad, run: Callable[[Path], Any], tmp_path: Path) -> None:
    path = tmp_path / f"model{case.suffix}"
    path.write_bytes(case.data())
    if case.error is None:
        run(path)
        return
    with pytest.raises(case.error) as info:
        run(path)
    assert case.fragment in info.value.message
    assert "model" in info.value.message  # the file is named


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.name for c in MODEL_CASES])
def test_inspecting_a_model_checks_every_declared_size(case: Bad, tmp_path: Path) -> None:
    _check(case, lambda p: inspect_model(p, case.limits), tmp_path)


# The reader meets an archive that lies about a member's size when it reads the array.
READ_CASES = [c for c in MODEL_CASES if c.data is not bf.lying_npz]


@pytest.mark.parametrize("case", READ_CASES, ids=[c.name for c in READ_CASES])
def test_the_readers_check_the_same_sizes(case: Bad, tmp_path: Path) -> None:
    """The worker's path: ``load_model`` (which reads the arrays) refuses the same files."""
    _check(case, lambda p: load_model(p, case.limits).close(), tmp_path)


def test_the_reader_refuses_a_member_that_inflates_past_its_size(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(bf.lying_npz())
    with pytest.raises(InvalidModelError, match="CRC"):
        load_model(path)


def test_datasets_get_the_same_checks_with_their_own_error(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    path.write_bytes(bf.claiming_npz())
    with pytest.raises(InputTooLargeError) as info:
        inspect_dataset(path, InputLimits())
    assert "array 'x' declares shape (1073741824, 1024) of float64" in info.value.message
    assert info.value.details["limit"] == "max_array_bytes"
    with pytest.raises(InvalidDatasetError, match="the member holds 64 bytes"):
        inspect_dataset(path)  # no limits: the sizes still have to add up
    path.write_bytes(bf.lying_npz())
    with pytest.raises(InvalidDatasetError, match="cannot be inflated: Bad CRC-32"):
        inspect_dataset(path)
    path.write_bytes(bf.corrupt_deflate_npz())
    with pytest.raises(InvalidDatasetError, match="Error -3 while decompressing data"):
        inspect_dataset(path)


def test_a_zip_bomb_is_refused_from_its_headers_by_the_ratio(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    path.write_bytes(bf.deflate_bomb(INFLATION_RATIO_FLOOR + 1))
    ratio = (INFLATION_RATIO_FLOOR + 1 + 128) / path.stat().st_size
    at = InputLimits(max_inflation_ratio=ratio)
    assert scan_npz(path, at, error=InvalidModelError, verify=True)[0].nbytes > (64 << 20)
    with pytest.raises(InputTooLargeError, match="max_inflation_ratio") as info:
        scan_npz(path, InputLimits(max_inflation_ratio=ratio * 0.999), error=InvalidModelError)
    assert "a zip bomb?" in info.value.message
    under_floor = tmp_path / "zeros.npz"
    under_floor.write_bytes(bf.deflate_bomb(INFLATION_RATIO_FLOOR - 1024))
    assert scan_npz(under_floor, InputLimits(max_inflation_ratio=1.0), error=InvalidModelError)


@pytest.mark.parametrize(
    ("text", "depth"),
    [("1", 0), ("[]", 1), ('{"a": [1, {"b": "[[[["}]}', 3), ('["\\"[["]', 1),
     ('"\\\\"', 0), (b"[" * 5000, 5000), ('{"a": "unterminated [[', 1)],
)
def test_json_depth_skips_strings(text: str | bytes, depth: int) -> None:
    assert json_depth(text) == depth
