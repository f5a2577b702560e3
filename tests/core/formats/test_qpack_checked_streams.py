"""Every entropy stream is decoded before it is written: one that does not give back its
codes (a coder's bug) is replaced by version 2, so the package still restores model.onnx
byte for byte; one that cannot be replaced fails the write instead of the unpack."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantcore.formats import qpack
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_reader import OnnxModel, load_onnx
from quantcore.formats.onnx_writer import WrittenModel, rewrite, serialize
from quantcore.formats.qpack import encode_body, pack, unpack
from quantcore.quantizers.codes import QuantizedTensor
from tests import models
from tests.core.formats.onnx_helpers import affine


def _coded(tmp_path: Path) -> tuple[WrittenModel, dict[str, QuantizedTensor]]:
    onnx.save(models.mlp(sizes=(300, 200, 10), opset=21), tmp_path / "in.onnx")
    source: OnnxModel = load_onnx(tmp_path / "in.onnx")
    coded = {t.name: affine(source.array(t.name), 4) for t in source.tensors
             if t.role == "weight"}  # fmt: skip
    return rewrite(source, coded), coded


def test_a_stream_that_does_not_decode_is_written_as_version_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    written, coded = _coded(tmp_path)
    real_encode = qpack.encode_codes

    def broken(codes: np.ndarray, **kwargs: int | None) -> bytes:
        stream = real_encode(codes, **kwargs)
        if kwargs.get("version") is not None:
            return stream  # the fallback's own call: the coder works there
        damaged = bytearray(stream)
        damaged[-1] ^= 0x01  # its CRC-32 no longer matches
        return bytes(damaged)

    monkeypatch.setattr(qpack, "encode_codes", broken)
    with caplog.at_level(logging.WARNING, logger="quantcore.formats.qpack"):
        bodies = {name: encode_body(tensor, True) for name, tensor in coded.items()}
    assert {body[4] for body in bodies.values()} == {2}
    assert sum("did not decode to them" in r.getMessage() for r in caplog.records) == len(coded)
    data = pack(written, coded, fmt=ModelFormat.ONNX, bodies=bodies).data
    assert unpack(data)[1] == serialize(written.proto)


def test_a_stream_that_cannot_be_replaced_fails_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, coded = _coded(tmp_path)
    monkeypatch.setattr(qpack, "encode_codes", lambda codes, **kwargs: b"QENT\x02broken")
    with pytest.raises(RuntimeError, match="does not decode to them"):
        encode_body(next(iter(coded.values())), True)
