"""Stream version 4 (adaptive binary contexts, no table): round trips on the edge cases,
chosen only where it is smaller, corrupt streams refused, and a package of a real quantized
model that uses it unpacks to ``model.onnx`` byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantcore.coding import adaptive
from quantcore.coding.entropy import decode_codes, decode_plan, encode_codes
from quantcore.errors import InvalidPackageError, InvalidSpecError
from tests.core.coding.test_entropy import laplacian_codes

RNG = np.random.default_rng(4)
CASES = {
    "empty": np.zeros(0, dtype=np.uint8),
    "one code": np.array([9], dtype=np.uint16),
    "constant": np.full(65_536, 300, dtype=np.uint16),
    "two symbols": np.array([0, 1] * 3_001, dtype=np.uint8),
    "below and above the mode": np.array([5, 5, 0, 5, 255, 5, 4, 6] * 500, dtype=np.uint8),
    "uniform 16-bit": RNG.integers(0, 65536, 20_000).astype(np.uint16),
    "extremes of 16 bits": np.array([0, 65535, 0, 0, 65535, 1] * 100, dtype=np.uint16),
    "3-bit laplacian": laplacian_codes(65_536, 3, seed=1),
    "12-bit laplacian": laplacian_codes(40_001, 12, seed=2),
    # A few codes, then the mode for good: the coder's last bytes are many zeros, trimmed.
    "one code then the mode": np.array([6] + [5] * 1_000, dtype=np.uint8),
    "a sparse head then the mode": np.array([3, 9, 5, 0] * 4 + [5] * 60_000, dtype=np.uint16),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip(name: str) -> None:
    codes = CASES[name]
    data = encode_codes(codes, version=4)
    assert data[4] == 4
    back = decode_codes(data, count=codes.size)
    assert back.dtype == (np.uint16 if codes.dtype == np.uint16 else np.uint8)
    np.testing.assert_array_equal(back, codes)
    dtype, chunks = decode_plan(data)
    out = np.empty(codes.size, dtype=dtype)
    for chunk in chunks:
        chunk.fill(out[chunk.start : chunk.start + chunk.size])
    np.testing.assert_array_equal(out, codes)


def test_a_constant_input_is_the_header_alone() -> None:
    assert len(encode_codes(np.full(65_536, 7, dtype=np.uint8))) <= 16


def test_small_inputs_get_v4_where_it_saves_enough_for_its_decoding() -> None:
    """v4 replaces the table-coded stream only where it saves ``b`` percent of it at ``b``
    bits a code: at 6.5 bits, a tiny tensor's 4.6% is not enough; at 2.3 bits, 9.0% is."""
    for codes, wanted in ((laplacian_codes(2_000, 8, seed=5), False),
                          (laplacian_codes(3_000, 3, seed=7), True)):  # fmt: skip
        chosen = encode_codes(codes)
        tabled = min((encode_codes(codes, version=v) for v in (2, 3)), key=len)
        tableless = encode_codes(codes, version=4)
        assert len(tableless) < len(tabled)
        assert adaptive.pays(len(tableless), len(tabled), codes.size) is wanted
        assert chosen == (tableless if wanted else tabled)
    # The saving asked grows with the rate: 1% a bit a code.
    assert adaptive.pays(990, 1000, 8000) and not adaptive.pays(991, 1000, 8000)
    assert adaptive.pays(9200, 10000, 10000) and not adaptive.pays(9201, 10000, 10000)
    # Over TINY_CODES at more than MAX_BITS a code: v2/v3 even where v4 would be smaller.
    wide = laplacian_codes(60_000, 8, seed=6)
    assert encode_codes(wide)[4] in (2, 3)
    assert not adaptive.fast_enough(wide.size, len(encode_codes(wide)))
    assert adaptive.fast_enough(adaptive.TINY_CODES, 10 * adaptive.TINY_CODES)
    assert adaptive.fast_enough(adaptive.LARGE_CODES, adaptive.LARGE_CODES * 3 // 16)
    assert not adaptive.fast_enough(adaptive.LARGE_CODES + 1, 0)
    # Small and peaked: v4 wins by the tables and lane states it does not have.
    small = laplacian_codes(3_000, 3, seed=7)
    assert encode_codes(small)[4] == 4
    assert len(encode_codes(small)) + 64 <= len(encode_codes(small, version=2))


def test_large_inputs_get_it_only_under_the_bits_limit() -> None:
    codes = laplacian_codes(adaptive.MAX_CODES + 1, 3, seed=8)  # about 2.4 bits a code
    assert encode_codes(codes)[4] in (2, 3)
    with pytest.raises(InvalidSpecError, match="at most 65536"):
        encode_codes(codes, version=4)
    # Mostly the mode, in runs whose density changes: the adaptive contexts follow it.
    rng = np.random.default_rng(10)
    density = np.repeat(rng.choice([0.01, 0.2], 40), 5_000)
    sparse = np.where(rng.random(density.size) < density, rng.integers(0, 9, density.size), 4)
    sparse = sparse.astype(np.uint8)
    data = encode_codes(sparse)
    assert data[4] == 4
    assert len(data) < 0.95 * min(len(encode_codes(sparse, version=v)) for v in (2, 3))
    np.testing.assert_array_equal(decode_codes(data, count=sparse.size), sparse)


def assert_flips_and_cuts_refused(data: bytes) -> None:
    """A v4-layout stream (v4, v9) with a flipped byte in its header, count or payload, or
    cut short, is refused."""
    for at in (6, 9, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[at] ^= 0x10
        with pytest.raises(InvalidPackageError):
            decode_codes(bytes(bad))
    for cut in (5, 8, len(data) - 1):
        with pytest.raises(InvalidPackageError):
            decode_codes(data[:cut])


def test_corrupt_streams_are_refused() -> None:
    codes = laplacian_codes(5_000, 6, seed=9)
    data = encode_codes(codes, version=4)
    with pytest.raises(InvalidPackageError, match="expected 4999"):
        decode_codes(data, count=4_999)
    assert_flips_and_cuts_refused(data)


def test_a_quantized_model_with_small_tensors_unpacks_byte_for_byte(tmp_path: Path) -> None:
    import onnx

    from quantcore.compress.artifacts import write_artifacts
    from quantcore.compress.pipeline import build_onnx, quantize_model
    from quantcore.formats.load import load_model
    from quantcore.formats.qpack import read_header, unpack_file
    from quantcore.spec import QuantSpec
    from tests import models

    onnx.save(models.cnn(), tmp_path / "in.onnx")
    for spec in ({"bits": 4}, {"target": {"weight_sqnr_db": 12.0}, "rdoq": True}):
        out = tmp_path / str(len(spec))
        qmodel = quantize_model(load_model(tmp_path / "in.onnx"), QuantSpec.from_dict(spec))
        arts = write_artifacts(qmodel, out, build_onnx(qmodel))
        data = (out / "model.qpack").read_bytes()
        header, start = read_header(data)
        versions = {data[start + t["offset"] + 4] for t in header["tensors"]}
        assert 4 in versions
        unpack_file(out / "model.qpack", out / "back.onnx")
        assert (out / "back.onnx").read_bytes() == arts.model_path.read_bytes()
