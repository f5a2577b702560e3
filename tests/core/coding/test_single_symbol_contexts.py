"""Streams v3 and v5 at their highest table precision (16 bits, over 2M codes): a context
that holds one symbol has frequency 2**16, one past what the decoders' 16-bit field held,
and such v3 streams did not decode (captcha-ocr's and minilm-l3's largest tensors at a
target of 0.5 bits a weight). v5's decoder had the same field; a low-rate v5 stream at
that precision round-trips through its new layout (and v7's and v10's, on 8 states)."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.coding import context, rans, trellis_coder
from quantcore.coding.entropy import decode_codes
from quantcore.coding.symbols import HEADER
from quantcore.compress.trellis import trellis_levels

COUNT = 2_200_000  # past the 2M codes from which v3's and v5's tables reach 16 bits


# The codes' histogram of captcha-ocr's largest tensor (8.4M codes) at 0.5 bits a weight:
# 91% the mode, and a few codes far from it, after which the contexts of large distances
# see only the mode.
HISTOGRAM = {4: 1, 5: 1, 6: 1, 12: 1, 19: 3, 20: 2, 21: 2, 22: 6, 23: 7, 24: 11, 25: 33,
             26: 78, 27: 236, 28: 852, 29: 3647, 30: 357_598, 31: 7_675_247, 32: 363_278,
             33: 4622, 34: 1041, 35: 234, 36: 69, 37: 33, 38: 18, 39: 8, 40: 5, 41: 3, 42: 1,
             56: 1, 58: 1}  # fmt: skip


def test_a_peaked_v3_stream_with_a_one_symbol_context_round_trips() -> None:
    p = np.zeros(59)
    p[list(HISTOGRAM)] = list(HISTOGRAM.values())
    codes = np.random.default_rng(0).choice(p.size, COUNT, p=p / p.sum()).astype(np.uint8)
    stream = context.encode(codes, rans.count_codes(codes), 1, force=True)
    assert stream is not None and stream[4] == 3
    np.testing.assert_array_equal(decode_codes(stream, count=COUNT), codes)


# 4 trellis states; 8 with zstd tables (v7, v8) and compact ones (v10, v11).
@pytest.mark.parametrize(("machine", "compact", "plain"), [(5, True, 5), (7, False, 7),
                                                           (7, True, 10)])  # fmt: skip
def test_a_low_rate_trellis_stream_round_trips(machine: int, compact: bool, plain: int) -> None:
    w = np.random.default_rng(1).laplace(size=COUNT).astype(np.float32)
    levels = trellis_levels(w, 3.5, 120, machine).levels  # a few hundred non-zero codes
    codes = (levels + 120).astype(np.uint8)
    stream = trellis_coder.encode(codes, -120, 1, compact)
    assert stream is not None and stream[4] in (plain, plain + 1)  # plain or mirrored
    assert HEADER.unpack_from(stream)[4] == 16  # the tables' precision
    np.testing.assert_array_equal(decode_codes(stream, count=COUNT), codes)
