"""Stream version 14 (the places and values of the codes other than the mode): round trips on
the edge cases, written by default only for sparse codes and where it is small enough,
corrupt streams refused, and a package of a real quantized model that uses it unpacks to
``model.onnx`` byte for byte."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from quantcore.coding import sparse
from quantcore.coding.entropy import decode_codes, decode_plan, encode_codes
from quantcore.errors import InvalidPackageError, InvalidSpecError
from tests.core.coding.test_adaptive import assert_flips_and_cuts_refused


def _sparse(n: int, others: int, mode: int, dtype: type, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = np.full(n, mode, dtype=dtype)
    top = np.iinfo(dtype).max
    at = rng.choice(n, others, replace=False)
    codes[at] = np.clip(mode + rng.laplace(0, 3, others).round().astype(np.int64) + 1, 0, top)
    codes[at[codes[at] == mode]] = mode + 1
    return codes


def _with(n: int, mode: int, dtype: type, places: dict[int, int]) -> np.ndarray:
    codes = np.full(n, mode, dtype=dtype)
    for at, value in places.items():
        codes[at] = value
    return codes


CASES = {
    "one other code, first": _with(1_000, 7, np.uint8, {0: 6}),
    "one other code, last": _with(1_000, 7, np.uint8, {999: 255}),
    "extremes of 16 bits": _with(70_000, 0, np.uint16, {5: 65535, 6: 65535, 69_999: 1}),
    "mode 65535, others below": _with(5_000, 65535, np.uint16, {17: 0, 4_000: 65534}),
    # Gaps of 2^20 and more: gap classes past twenty.
    "long gaps": _with(3_000_000, 2, np.uint8, {0: 1, 1_100_000: 9, 2_999_999: 3}),
    "a run of others": _with(10_000, 128, np.uint8, {i: 100 + i % 60 for i in range(300, 600)}),
    "scattered 8-bit": _sparse(200_000, 9_000, 40, np.uint8, seed=1),
    "scattered 16-bit": _sparse(100_000, 3_000, 30_000, np.uint16, seed=2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip(name: str) -> None:
    codes = CASES[name]
    data = encode_codes(codes, version=14)
    assert data[4] == 14
    back = decode_codes(data, count=codes.size)
    assert back.dtype == codes.dtype
    np.testing.assert_array_equal(back, codes)
    dtype, chunks = decode_plan(data)
    out = np.full(codes.size, 77, dtype=dtype)  # every code must be written
    for chunk in chunks:
        chunk.fill(out[chunk.start : chunk.start + chunk.size])
    np.testing.assert_array_equal(out, codes)


def test_written_for_sparse_codes_where_it_is_small_enough() -> None:
    # A tensor quantized at low rate: one code but for a few hundred weights, in runs.
    codes = np.full(400_000, 8, dtype=np.uint8)
    rng = np.random.default_rng(3)
    for start in rng.choice(399_000, 20, replace=False):
        codes[start : start + 30] = rng.integers(5, 12, 30)
    chosen = encode_codes(codes)
    others = [encode_codes(codes, version=v) for v in (2, 3)]
    assert chosen[4] == 14
    assert len(chosen) <= (1 + sparse.SLACK_SHARE) * min(len(s) for s in others)
    np.testing.assert_array_equal(decode_codes(chosen, count=codes.size), codes)
    # Past MAX_SHARE of other codes it is not tried, and it may not be forced.
    dense = _sparse(10_000, 1_000, 3, np.uint8, seed=4)
    assert not sparse.worth_trying(dense.size, np.bincount(dense))
    assert encode_codes(dense)[4] != 14
    with pytest.raises(InvalidSpecError, match="version 14"):
        encode_codes(dense, version=14)
    with pytest.raises(InvalidSpecError, match="version 14"):
        encode_codes(np.full(100, 3, dtype=np.uint8), version=14)  # nothing but the mode
    # More than SLACK_SHARE larger than the smallest other stream: not written.
    table_coded = encode_codes(codes, version=2).ljust(1000, b"\0")
    assert sparse.accept(1010, table_coded, codes.size, 600)
    assert not sparse.accept(1011, table_coded, codes.size, 600)


def test_may_be_larger_in_place_of_a_stream_decoded_a_flag_at_a_time() -> None:
    # v4 decodes every code (4-10 ns each), v14 the codes other than the mode (40-60 ns):
    # a byte more for each SPARED_CODES codes it spares beyond SPARED_PER_OTHER a code.
    codes = np.full(65_536, 8, dtype=np.uint8)
    codes[::80] = 9  # 820 other codes, 1.25%
    others = int(np.count_nonzero(codes != 8))
    flagwise = encode_codes(codes, version=4)
    spared = (codes.size - sparse.SPARED_PER_OTHER * others) // sparse.SPARED_CODES
    most = int(len(flagwise) * (1 + sparse.SLACK_SHARE)) + spared
    assert spared > 50
    assert sparse.accept(most, flagwise, codes.size, others)
    assert not sparse.accept(most + 1, flagwise, codes.size, others)
    # Where others are too many to spare anything, the share alone.
    assert sparse.most_bytes(flagwise, codes.size, codes.size // 16) == most - spared
    # In place of a table-coded stream (v2: about 1 ns a code), the share alone.
    table_coded = encode_codes(codes, version=2)
    assert sparse.most_bytes(table_coded, codes.size, others) == int(len(table_coded) * 1.01)


def test_corrupt_streams_are_refused() -> None:
    codes = CASES["scattered 8-bit"]
    data = encode_codes(codes, version=14)
    with pytest.raises(InvalidPackageError, match="expected 199999"):
        decode_codes(data, count=199_999)
    assert_flips_and_cuts_refused(data)
    # A header claiming more other codes than codes, with its CRC-32 made right.
    bad = _with(100, 1, np.uint8, {3: 2})
    stream = bytearray(encode_codes(bad, version=14))
    assert stream[6:9] == bytes([100, 1, 1])  # count, mode, others
    stream[8] = 101
    payload = bytes(stream[13:])
    stream[9:13] = struct.pack("<I", zlib.crc32(payload, zlib.crc32(bytes(stream[:9]))))
    with pytest.raises(InvalidPackageError, match="others=101"):
        decode_codes(bytes(stream))


def unpacked_stream_versions(tmp_path: Path, spec: dict[str, object]) -> set[int]:
    """The stream versions of the package of ``tests.models.cnn`` quantized by ``spec``,
    once its unpacking has restored ``model.onnx`` byte for byte."""
    import onnx

    from quantcore.compress.artifacts import write_artifacts
    from quantcore.compress.pipeline import build_onnx, quantize_model
    from quantcore.formats.load import load_model
    from quantcore.formats.qpack import read_header, unpack_file
    from quantcore.spec import QuantSpec
    from tests import models

    onnx.save(models.cnn(), tmp_path / "in.onnx")
    qmodel = quantize_model(load_model(tmp_path / "in.onnx"), QuantSpec.from_dict(spec))
    arts = write_artifacts(qmodel, tmp_path, build_onnx(qmodel))
    data = (tmp_path / "model.qpack").read_bytes()
    header, start = read_header(data)
    unpack_file(tmp_path / "model.qpack", tmp_path / "back.onnx")
    assert (tmp_path / "back.onnx").read_bytes() == arts.model_path.read_bytes()
    return {data[start + t["offset"] + 4] for t in header["tensors"]}


def test_a_quantized_model_at_low_rate_unpacks_byte_for_byte(tmp_path: Path) -> None:
    spec = {"target": {"weight_sqnr_db": 2.0}, "rdoq": "auto"}
    assert 14 in unpacked_stream_versions(tmp_path, spec)
