"""Stream version 9: trellis indices under adaptive binary contexts and no table, for small
trellis-quantized tensors. Round trips, chosen where it is the smaller and decodes fast,
refused off the 8-state path, corrupt streams refused."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.coding import adaptive, trellis_coder
from quantcore.coding.entropy import decode_codes, decode_plan, encode_codes
from quantcore.compress.trellis import trellis_levels
from quantcore.errors import InvalidPackageError, InvalidSpecError
from tests.core.coding.test_adaptive import assert_flips_and_cuts_refused


def _tcq(n: int, step: float, m_max: int, dtype: type, machine: int = 7) -> np.ndarray:
    w = np.random.default_rng(n).laplace(size=n).astype(np.float32)
    return (trellis_levels(w, step, m_max, machine).levels + m_max).astype(dtype)


@pytest.mark.parametrize(("n", "step", "m_max", "dtype"), [
    (1, 0.2, 120, np.uint8), (2, 0.2, 120, np.uint8), (9, 0.05, 120, np.uint8),
    (1000, 0.2, 120, np.uint8), (60_000, 0.5, 120, np.uint8), (20_000, 0.003, 3000, np.uint16),
])  # fmt: skip
def test_round_trip(n: int, step: float, m_max: int, dtype: type) -> None:
    codes = _tcq(n, step, m_max, dtype)
    data = encode_codes(codes, code_min=-m_max, version=9)
    assert data[4] == adaptive.TRELLIS_VERSION
    back = decode_codes(data, count=n)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, codes)
    stream_dtype, chunks = decode_plan(data)
    out = np.empty(n, dtype=stream_dtype)
    for chunk in chunks:
        chunk.fill(out[chunk.start : chunk.start + chunk.size])
    np.testing.assert_array_equal(out, codes)


def test_small_tensors_take_it_by_the_tables_it_does_not_have() -> None:
    codes = _tcq(2000, 0.5, 120, np.uint8)  # 2.7 bits a code
    chosen = encode_codes(codes, code_min=-120)
    tabled = trellis_coder.encode(codes, -120, 1)
    assert chosen[4] == adaptive.TRELLIS_VERSION and tabled is not None
    assert len(chosen) < 0.97 * len(tabled)
    # Coded as levels (v4), the codes pay for the parity the trellis state knows.
    assert len(chosen) < 0.85 * len(encode_codes(codes, version=4))


def test_at_high_rate_it_must_save_more_for_its_slower_decoding() -> None:
    """At 6.4 bits a code v9 saves 4.5%, under the 6.4% ``adaptive.pays`` asks there: the
    table-coded stream is written, though larger."""
    codes = _tcq(2000, 0.05, 120, np.uint8)
    chosen = encode_codes(codes, code_min=-120)
    tableless = encode_codes(codes, code_min=-120, version=9)
    assert chosen[4] in trellis_coder.VERSIONS and len(tableless) < len(chosen)
    assert not adaptive.pays(len(tableless), len(chosen), codes.size)


def test_tensors_past_the_tiny_keep_the_fast_streams() -> None:
    """v9 decodes a flag at a time: past ``TRELLIS_TINY_CODES`` a table-coded stream decodes
    faster, and v9 is not written, even where it would be the smaller (a low rate)."""
    codes = _tcq(adaptive.TRELLIS_TINY_CODES + 1, 0.5, 120, np.uint8)
    chosen = encode_codes(codes, code_min=-120)
    assert chosen[4] in trellis_coder.VERSIONS
    assert len(encode_codes(codes, code_min=-120, version=9)) < len(chosen)
    assert not adaptive.trellis_fast_enough(codes.size)


def test_codes_off_the_eight_state_path_are_refused() -> None:
    four_state = _tcq(5000, 0.2, 120, np.uint8, machine=5)
    assert adaptive.encode_trellis(four_state, -120) is None
    assert encode_codes(four_state, code_min=-120)[4] != adaptive.TRELLIS_VERSION
    with pytest.raises(InvalidSpecError, match="version 9 needs code_min"):
        encode_codes(four_state, code_min=-120, version=9)
    with pytest.raises(InvalidSpecError, match="version 9 needs code_min"):
        encode_codes(_tcq(5000, 0.2, 120, np.uint8), version=9)
    assert adaptive.encode_trellis(_tcq(50, 0.2, 120, np.uint8), 5) is None  # 0 is no code


def test_corrupt_streams_are_refused() -> None:
    codes = _tcq(5000, 0.2, 120, np.uint8)
    data = encode_codes(codes, code_min=-120, version=9)
    with pytest.raises(InvalidPackageError, match="expected 4999"):
        decode_codes(data, count=4999)
    assert_flips_and_cuts_refused(data)
    constant_flag = bytearray(data)
    constant_flag[5] |= 2  # v4's "every code is the mode": not a v9 flag
    with pytest.raises(InvalidPackageError, match="v9 header"):
        decode_codes(bytes(constant_flag))
