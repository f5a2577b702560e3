"""Streams decoded without their CRC-32 (a package's unpacking, whose piece hashes check the
restored bytes instead): any flipped byte is refused by the structure checks or the decoders,
or decodes to codes of the right count, and never takes the process down."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.coding import context, rans, rans_batch, trellis_coder
from quantcore.coding.entropy import decode_plan, encode_codes
from quantcore.coding.symbols import HEADER
from quantcore.compress.trellis import trellis_levels
from quantcore.errors import InvalidPackageError
from tests.core.coding.test_context import correlated_codes
from tests.core.coding.test_entropy import laplacian_codes

CHUNK = 4096


def _stream(kind: str) -> tuple[bytes, np.ndarray]:
    if kind == "v2":
        codes = laplacian_codes(5 * CHUNK + 17, 4, seed=1)
        return encode_codes(codes, version=2), codes
    if kind == "v2-raw":  # 12-bit codes: low bits stored raw beside the words
        codes = laplacian_codes(5 * CHUNK + 17, 12, seed=2)
        return encode_codes(codes, version=2), codes
    if kind == "v3":
        codes = correlated_codes(5 * CHUNK + 17, 5, seed=3)
        return encode_codes(codes, version=3), codes
    rng = np.random.default_rng(4)
    w = rng.laplace(size=5 * CHUNK + 17).astype(np.float32)
    if kind in ("v6", "v8", "v11"):  # signs in runs of 9: the mirrored codes are the smaller stream
        w = np.abs(w) * np.repeat(rng.choice([-1.0, 1.0], size=w.size // 9 + 1), 9)[: w.size]
    machine = 5 if kind in ("v5", "v6") else 7  # 4 states, or 8
    codes = (trellis_levels(w, 0.2, 120, machine).levels + 120).astype(np.uint8)
    return encode_codes(codes, version=int(kind[1:]), code_min=-120), codes


def _restore(data: bytes, count: int) -> np.ndarray:
    """The codes, decoded as a package's unpacking does: planned without the CRC, the chunks
    filled together (through the vector decoder where the CPU has it)."""
    dtype, chunks = decode_plan(data, count=count, check_crc=False)
    out = np.empty(count, dtype=dtype)
    rans_batch.fill_chunks([(c, out[c.start : c.start + c.size]) for c in chunks])
    return out


@pytest.mark.parametrize("kind", ["v2", "v2-raw", "v3", "v5", "v6", "v7", "v8", "v10", "v11"])
def test_flipped_bytes_without_the_crc_are_refused_or_decode_to_the_count(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in (rans, context, trellis_coder):
        monkeypatch.setattr(module, "CHUNK_SYMBOLS", CHUNK)
    data, codes = _stream(kind)
    assert data[4] == int(kind[1:].split("-")[0])
    np.testing.assert_array_equal(_restore(data, codes.size), codes)
    rng = np.random.default_rng(7)
    refused = 0
    for position in rng.integers(HEADER.size, len(data), 120).tolist():
        bad = bytearray(data)
        bad[position] ^= 1 << int(rng.integers(8))
        try:
            back = _restore(bytes(bad), codes.size)
        except InvalidPackageError:
            refused += 1
            continue
        assert back.size == codes.size
    assert refused > 0  # most flips change how the words end: the decoders notice
    with pytest.raises(InvalidPackageError, match="CRC-32"):
        decode_plan(bytes(bad), count=codes.size)  # checked, the last flip is found at once
