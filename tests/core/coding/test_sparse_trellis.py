"""Stream version 15 (the places and trellis indices of the codes of levels other than 0, for
trellis-quantized tensors): round trips on both machines and the edge cases, the decoder's
tables of runs against a walk of the machine, written by default only where it is smaller
and decodes faster, corrupt streams refused, and a package of a quantized model that uses it
unpacks to ``model.onnx`` byte for byte."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from quantcore.coding import sparse, trellis_coder
from quantcore.coding.entropy import decode_codes, decode_plan, encode_codes
from quantcore.coding.symbols import HEADER
from quantcore.coding.trellis_coder import path_levels
from quantcore.compress.trellis import trellis_levels
from quantcore.errors import InvalidPackageError, InvalidSpecError
from tests.core.coding.test_adaptive import assert_flips_and_cuts_refused
from tests.core.coding.test_sparse import unpacked_stream_versions

EIGHT, THIRTY_TWO = trellis_coder.EIGHT_STATE_VERSION, trellis_coder.WIDE_VERSION


def _chunks(stream: bytes) -> int:
    return int(HEADER.unpack_from(stream)[9])  # the header's chunk count


def _tcq(n: int, step: float, m_max: int, dtype: type, machine: int, seed: int = 0,
         ) -> np.ndarray:  # fmt: skip
    """Codes (level + m_max) of a Laplacian quantized by TCQ at a coarse ``step``: mostly
    level 0, the others where the weights are large."""
    w = np.random.default_rng(seed).laplace(size=n).astype(np.float32)
    return (trellis_levels(w, step, m_max, machine).levels + m_max).astype(dtype)


def _on_path(n: int, indices: dict[int, int], machine: int, m_max: int, dtype: type,
             ) -> np.ndarray:  # fmt: skip
    """Codes of the path whose indices are 0 but at ``indices``' places."""
    k = np.zeros(n, np.int64)
    for at, value in indices.items():
        k[at] = value
    return (path_levels(k, machine) + m_max).astype(dtype)


CASES = {
    "8-state, 8-bit": (_tcq(50_000, 3.0, 120, np.uint8, EIGHT), 120),
    "32-state, 8-bit": (_tcq(200_000, 3.5, 120, np.uint8, THIRTY_TWO), 120),
    "32-state, 16-bit": (_tcq(60_000, 3.0, 3000, np.uint16, THIRTY_TWO, seed=1), 3000),
    "one other level, first": (_on_path(1_000, {0: -1}, THIRTY_TWO, 7, np.uint8), 7),
    "one other level, last": (_on_path(1_000, {999: 3}, EIGHT, 7, np.uint8), 7),
    # Gaps of 2^20 and more, from states on every cycle of the runs.
    "long gaps": (_on_path(3_000_000, {0: 1, 5: -2, 1_100_000: 1, 2_999_999: -1}, THIRTY_TWO,
                           4, np.uint8), 4),
    "level 0 is code 0": (_on_path(5_000, {10: 1, 4_000: 2}, EIGHT, 0, np.uint8), 0),
    "a run of others": (_on_path(10_000, {i: 1 + i % 3 for i in range(300, 600)}, THIRTY_TWO,
                                 20, np.uint8), 20),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip(name: str) -> None:
    codes, m_max = CASES[name]
    data = encode_codes(codes, version=15, code_min=-m_max)
    assert data[4] == sparse.TRELLIS_VERSION
    back = decode_codes(data, count=codes.size)
    assert back.dtype == codes.dtype
    np.testing.assert_array_equal(back, codes)
    dtype, chunks = decode_plan(data)
    out = np.full(codes.size, 77, dtype=dtype)  # every code must be written
    for chunk in chunks:
        chunk.fill(out[chunk.start : chunk.start + chunk.size])
    np.testing.assert_array_equal(out, codes)


@pytest.mark.parametrize("flag", [0, sparse.THIRTY_TWO])
def test_run_tables_follow_the_machine(flag: int) -> None:
    transitions, quantizers, runs, counts, offsets = sparse._machine(flag)
    period = runs.shape[0]
    for start in range(len(quantizers)):
        state, seen = start, {0: [], 1: []}
        for r in range(3 * period):
            assert runs[r % period, start] == state
            seen[int(quantizers[state])].append(r)
            state = transitions[state, 0]
        for q in (0, 1):
            assert counts[start, q] * 3 == len(seen[q])
            for j, r in enumerate(seen[q]):  # the j-th place of q: as the decoder finds it
                per = counts[start, q]
                assert j // per * period + offsets[start, q, j % per] == r


def test_written_where_smaller_and_faster() -> None:
    # 2.5% of codes not level 0: in place of a table-coded stream of one chunk or of two.
    for n in (60_000, 300_000):
        codes = _tcq(n, 2.4, 120, np.uint8, THIRTY_TWO, seed=6)
        counts = np.bincount(codes)
        assert 1 / 64 < 1 - counts[120] / codes.size <= sparse.TRELLIS_MAX_SHARE
        chosen = encode_codes(codes, code_min=-120)
        table = encode_codes(codes, code_min=-120, version=12)
        assert _chunks(table) == (1 if n < trellis_coder.PAIRED_CODES else 2)
        assert chosen[4] == sparse.TRELLIS_VERSION
        assert len(chosen) < len(table)
        np.testing.assert_array_equal(decode_codes(chosen, count=codes.size), codes)
    # Denser than TRELLIS_MAX_SHARE: tried in place of a one-chunk stream (8 lanes decode
    # slower than a pair's 16) or a range-coded one, not in place of two chunks.
    for n, alone in ((60_000, True), (300_000, False)):
        dense = _tcq(n, 2.25, 120, np.uint8, THIRTY_TWO, seed=6)
        counts = np.bincount(dense)
        assert sparse.TRELLIS_MAX_SHARE < 1 - counts[120] / dense.size <= sparse.MAX_SHARE
        table = encode_codes(dense, code_min=-120, version=12)
        assert sparse.trellis_worth_trying(dense.size, counts, -120, table) == alone
        range_coded = encode_codes(dense, version=sparse.VERSION)
        assert sparse.trellis_worth_trying(dense.size, counts, -120, range_coded)
    # Without code_min, off the paths, or nothing but level 0: refused when forced.
    with pytest.raises(InvalidSpecError, match="version 15"):
        encode_codes(codes, version=15)
    off = codes.copy()
    off[np.flatnonzero(off != 120)[:50]] += 1  # the other parity: off both paths
    with pytest.raises(InvalidSpecError, match="trellis path"):
        encode_codes(off, version=15, code_min=-120)
    with pytest.raises(InvalidSpecError, match="version 15"):
        encode_codes(np.full(100, 120, np.uint8), version=15, code_min=-120)


def test_corrupt_streams_are_refused() -> None:
    codes, m_max = CASES["32-state, 8-bit"]
    data = encode_codes(codes, version=15, code_min=-m_max)
    with pytest.raises(InvalidPackageError, match="expected 199999"):
        decode_codes(data, count=199_999)
    assert_flips_and_cuts_refused(data)
    # A header claiming more other codes than codes, with its CRC-32 made right.
    few = _on_path(100, {3: 1}, EIGHT, 1, np.uint8)
    stream = bytearray(encode_codes(few, version=15, code_min=-1))
    assert stream[6:9] == bytes([100, 1, 1])  # count, level 0's code, others
    stream[8] = 101
    payload = bytes(stream[13:])
    stream[9:13] = struct.pack("<I", zlib.crc32(payload, zlib.crc32(bytes(stream[:9]))))
    with pytest.raises(InvalidPackageError, match="others=101"):
        decode_codes(bytes(stream))
    # An unknown flag.
    stream = bytearray(encode_codes(few, version=15, code_min=-1))
    stream[5] |= 4
    with pytest.raises(InvalidPackageError, match="v15 header"):
        decode_codes(bytes(stream))


def test_a_trellis_quantized_model_at_low_rate_unpacks_byte_for_byte(tmp_path: Path) -> None:
    spec = {"target": {"weight_sqnr_db": 2.0}, "rdoq": "trellis"}
    assert sparse.TRELLIS_VERSION in unpacked_stream_versions(tmp_path, spec)
