"""Version 1 streams, as the constriction coder wrote them before version 2, still decode; and
the version 1 encoder, kept for them, still writes the very same bytes.

``data/v1_streams.npz`` holds, for each case, the codes and the stream that the version 1
coder wrote for them (``chunks_of_1000`` with its chunk size set to 1000)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantcore.coding import entropy_v1
from quantcore.coding.entropy import decode_codes, encode_codes
from quantcore.errors import InvalidPackageError

STREAMS = np.load(Path(__file__).parent / "data" / "v1_streams.npz")
CASES = sorted({key.split("/")[0] for key in STREAMS.files})


def _case(name: str) -> tuple[np.ndarray, bytes]:
    return STREAMS[f"{name}/codes"], STREAMS[f"{name}/stream"].tobytes()


def test_the_fixtures_cover_the_stream_shapes() -> None:
    assert {"empty", "constant", "uniform_8bit", "chunks_of_1000"} <= set(CASES)
    raw_bits = {name: _case(name)[1][6] for name in CASES}
    assert raw_bits["laplacian_3bit"] == 0 and raw_bits["laplacian_16bit_raw_bits"] > 0


@pytest.mark.parametrize("name", CASES)
def test_v1_streams_decode(name: str) -> None:
    codes, stream = _case(name)
    assert stream[4] == 1
    back = decode_codes(stream)
    assert back.dtype == codes.dtype
    np.testing.assert_array_equal(back, codes)


@pytest.mark.parametrize("name", CASES)
def test_the_v1_encoder_writes_the_same_bytes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    codes, stream = _case(name)
    if name == "chunks_of_1000":
        monkeypatch.setattr(entropy_v1, "CHUNK_SYMBOLS", 1000)
    assert encode_codes(codes, version=1) == stream


def test_a_corrupt_v1_stream_is_refused() -> None:
    _, stream = _case("laplacian_8bit")
    broken = bytearray(stream)
    broken[-10] ^= 0x40
    with pytest.raises(InvalidPackageError, match="CRC-32"):
        decode_codes(bytes(broken))
