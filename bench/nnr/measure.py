"""Both coders on one real model, measured the same way.

- ``ours``: the in-process pipeline (load, quantize, build ``model.onnx``, pack
  ``model.qpack``) on one spec: the package's bytes (codes, scales and the zstd skeleton of
  everything left untouched), the pooled SQNR of the quantized weights, and the output SQNR of
  the written ``model.onnx`` on the catalog's realistic inputs.
- ``reference``: nncodec's DeepCABAC on the same tensors, swept over its QP: bitstream bytes
  plus the rest of the model (the float model with those tensors emptied, zstd level 3 like
  our skeleton), the pooled SQNR of the decoded tensors, and the output SQNR of the float
  model with the decoded tensors put in their place. QPs cover the requested SQNR range
  (1.5 dB a QP) and are cached on disk by model and QP, bitstreams included, so reruns cost
  nothing.
- decoding speed: our package's code sections and the reference's bitstream at the QP nearest
  in weight SQNR, timed alternately in the same minutes (``decode_alternately``): this
  virtual machine's speed moves by 20-30% from one minute to the next, so timings taken
  minutes apart carried that into their ratio.

Pooled weight SQNR: ``10 log10(Σ w² / Σ (w - ŵ)²)`` over every quantized tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import zstandard
from onnx import numpy_helper

from bench.common import scalar_decoder
from bench.nnr import reference
from bench.realmodels import fidelity
from bench.realmodels.catalog import ModelEntry
from bench.realmodels.fetch import fetch, sha256_of
from quantcore.coding.entropy import decode_codes
from quantcore.compress.artifacts import write_artifacts
from quantcore.compress.pipeline import (
    build_onnx,
    quantize_model,
    select_tensors,
)
from quantcore.formats.load import load_model
from quantcore.formats.onnx_reader import OnnxModel
from quantcore.formats.qpack import read_header
from quantcore.spec import QuantSpec

SKELETON_ZSTD_LEVEL = 3  # as quantcore.formats.qpack
# The tensors both coders code: every weight the policy selects, the smallest too.
EVERY_WEIGHT = {"bits": 8, "keep_small": 0}


@dataclass(frozen=True, kw_only=True)
class Point:
    """One rate–distortion point of either coder on one model."""

    label: str  # spec or QP
    bytes: int  # what is shipped: codes + everything else of the model
    weight_sqnr_db: float
    output_sqnr_db: float
    seconds: float
    # CPU seconds of decoding the quantized weights' codes on one core (ours: every tensor's
    # section of model.qpack; the reference: nnc.decompress of its bitstream), best of the
    # runs of ``decode_alternately``.
    decode_s: float | None = None
    # Ours by the scalar kernels alone (no vector decoder), in the same runs.
    decode_scalar_s: float | None = None
    # Ours only: the reference's decoding at its QP nearest in weight SQNR, in the same runs.
    ref_decode_s: float | None = None
    ref_decode_label: str | None = None


# What decoding a package's code sections takes: each tensor's section and its code count.
Sections = list[tuple[bytes, int]]


def decode_alternately(
    sections: Sections, bitstream: Path, decoder: reference.Decoder, rounds: int = 11
) -> tuple[float, float, float]:
    """CPU seconds of decoding ``sections`` as shipped, by the scalar kernels alone
    (``scalar_decoder``), and the reference's ``bitstream``: best of ``rounds`` rounds, each
    decoding ours twice, the scalar way twice and the reference once (ours take tens of
    milliseconds, the reference a second or more). Ours on this thread's clock: the
    process's would count the BLAS threads still spinning after a job."""
    best = [math.inf, math.inf, math.inf]
    for _ in range(rounds):
        for k in (0, 0, 1, 1):
            with scalar_decoder() if k else contextlib.nullcontext():
                start = time.thread_time()
                for body, count in sections:
                    decode_codes(body, count=count, threads=1)
                best[k] = min(best[k], time.thread_time() - start)
        best[2] = min(best[2], decoder.decode_cpu_s(bitstream))
    return best[0], best[1], best[2]


def pooled_sqnr_db(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    signal = noise = 0.0
    for w, wq in pairs:
        w64 = np.asarray(w, np.float64)
        signal += float(np.dot(w64.ravel(), w64.ravel()))
        e = (w64 - np.asarray(wq, np.float64)).ravel()
        noise += float(np.dot(e, e))
    return math.inf if noise == 0 else 10.0 * math.log10(signal / noise)


class Subject:
    """One catalog model: its file, the tensors our policy quantizes, its float outputs."""

    def __init__(self, entry: ModelEntry) -> None:
        self.entry = entry
        self.path = fetch(entry.name)
        model = load_model(self.path)
        assert isinstance(model, OnnxModel)
        # Every weight the policy selects, the smallest too (keep_small 0): both coders code
        # the same tensors, and the reference's cached bitstreams stay those tensors'.
        self.names = select_tensors(model, QuantSpec.from_dict(EVERY_WEIGHT)).quantize
        self.tensors = {n: np.asarray(model.array(n), np.float32) for n in self.names}
        self.params = sum(t.size for t in self.tensors.values())
        self.feeds = entry.feeds(0)
        self.ref_outputs = fidelity.run(fidelity.session(self.path), entry, self.feeds)
        self.rest_bytes = self._rest_bytes()

    def _rest_bytes(self) -> int:
        """The float model with the quantized tensors' data emptied, zstd-compressed."""
        model = load_model(self.path)
        assert isinstance(model, OnnxModel)
        for name in self.names:
            tensor = model.sources[name].tensor
            for field in ("raw_data", "float_data"):
                tensor.ClearField(field)
        raw = model.proto.SerializeToString()
        return len(zstandard.ZstdCompressor(level=SKELETON_ZSTD_LEVEL).compress(raw))

    def output_sqnr(self, onnx_path: Path) -> float:
        test = fidelity.run(fidelity.session(onnx_path), self.entry, self.feeds)
        return fidelity.output_sqnr_db(self.entry, self.ref_outputs, test)

    def substituted_sqnr(self, decoded: dict[str, np.ndarray], work: Path) -> float:
        """Output SQNR of the float model whose quantized tensors hold ``decoded``."""
        model = load_model(self.path)
        assert isinstance(model, OnnxModel)
        for name, values in decoded.items():
            tensor = model.sources[name].tensor
            dtype = np.asarray(model.array(name)).dtype
            tensor.CopyFrom(numpy_helper.from_array(values.astype(dtype), tensor.name))
        path = work / "substituted.onnx"
        onnx.save(model.proto, str(path))
        return self.output_sqnr(path)

    def ours(self, label: str, spec: dict[str, Any]) -> tuple[Point, dict[str, Any]]:
        """Our quantize path on ``spec``; also returns the layer rows of the report and the
        package's code sections (``sections``), to time their decoding later."""
        start = time.perf_counter()
        model = load_model(self.path)
        qmodel = quantize_model(model, QuantSpec.from_dict(spec))
        written = build_onnx(qmodel)
        with tempfile.TemporaryDirectory(prefix="nnr-ours-") as tmp:
            arts = write_artifacts(qmodel, Path(tmp), written)
            seconds = time.perf_counter() - start
            out_sqnr = self.output_sqnr(arts.model_path)
            size = arts.sizes["model.qpack"]
            header, start = read_header((Path(tmp) / "model.qpack").read_bytes())
        pairs = [(self.tensors[w.name], w.dequantized()) for w in qmodel.weights]
        point = Point(label=label, bytes=size, weight_sqnr_db=pooled_sqnr_db(pairs),
                      output_sqnr_db=out_sqnr, seconds=seconds)
        # Where the package's bytes go: prefix and JSON header, zstd skeleton, code sections.
        skeleton = int(header["skeleton"]["length"])
        extra = {"layers": [w.layer for w in qmodel.weights],
                 "sections": [(w.body, int(np.size(w.codes))) for w in qmodel.weights],
                 "parts": {"header": start, "skeleton": skeleton,
                           "codes": size - start - skeleton}}
        return point, extra

    @functools.cached_property
    def _qp_cache(self) -> Path:
        """The points' cache file, named by the model's SHA-256 (hashed once: every QP's
        bitstream is named after it)."""
        root = reference.cache_dir() / "runs" / self.entry.name
        root.mkdir(parents=True, exist_ok=True)
        return root / f"{sha256_of(self.path)[:16]}.json"

    def bitstream(self, qp: int) -> Path:
        """Where the reference's bitstream at ``qp`` is kept."""
        return self._qp_cache.with_name(f"{self._qp_cache.stem}-qp{qp}.nnr")

    def reference(self, qps: list[int]) -> list[Point]:
        """DeepCABAC at each QP (cached by model and QP, bitstreams included)."""
        cache_file = self._qp_cache
        cached: dict[str, Any] = json.loads(cache_file.read_text()) if cache_file.exists() else {}
        missing = [q for q in qps if cached.get(str(q), {}).get("decode_s") is None
                   or not self.bitstream(q).is_file()]
        if missing:
            with tempfile.TemporaryDirectory(prefix="nnr-ref-") as tmp:
                work = Path(tmp)
                for rp in reference.encode_sweep(self.tensors, missing, work / "sweep"):
                    shutil.move(rp.bitstream, self.bitstream(rp.qp))
                    pairs = [(self.tensors[n], rp.decoded[n]) for n in self.names]
                    point = Point(label=f"qp {rp.qp}", bytes=rp.bytes + self.rest_bytes,
                                  weight_sqnr_db=pooled_sqnr_db(pairs),
                                  output_sqnr_db=self.substituted_sqnr(rp.decoded, work),
                                  seconds=rp.encode_s, decode_s=rp.decode_cpu_s)
                    cached[str(rp.qp)] = {**asdict(point), "bitstream_bytes": rp.bytes}
            cache_file.write_text(json.dumps(cached, indent=1))
        fields = {f.name for f in dataclasses.fields(Point)}
        return [Point(**{k: v for k, v in cached[str(q)].items() if k in fields}) for q in qps]

    def qps_for(self, sqnrs: list[float], margin_db: float = 3.0) -> list[int]:
        """Even QPs whose plain-rounding SQNR (Δ = 2^(QP/4), Δ²/12 noise) spans ``sqnrs``."""
        power = sum(float(np.dot(t.ravel().astype(np.float64), t.ravel())) for t in
                    self.tensors.values()) / self.params
        def qp(sqnr: float) -> float:
            step = math.sqrt(12.0 * power * 10 ** (-sqnr / 10.0))
            return 4.0 * math.log2(step)
        finite = [s for s in sqnrs if math.isfinite(s)]
        lo = math.floor(qp(max(finite) + margin_db) / 2) * 2
        hi = math.ceil(qp(min(finite) - margin_db) / 2) * 2 + 4  # low rates: dead zones
        return list(range(lo, hi + 1, 2))


def isotonic(values: np.ndarray) -> np.ndarray:
    """The non-decreasing least-squares fit of ``values`` (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values.astype(np.float64):
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return np.concatenate([np.full(int(n), m) for m, n in blocks])


def bytes_at(ref: list[Point], target: float, key: str) -> float | None:
    """The reference's bytes at ``target`` SQNR (``key``: weight or output), interpolated in
    log bytes on the isotonic fit of its SQNR against size: output SQNR jumps by several dB
    between neighbouring QPs, and a fit through the noise neither rewards nor punishes the
    reference for its lucky or unlucky points. None outside the fitted range."""
    pts = sorted(ref, key=lambda p: p.bytes)
    sizes = np.log(np.array([p.bytes for p in pts], np.float64))
    fitted = isotonic(np.array([getattr(p, key) for p in pts], np.float64))
    if not (fitted[0] <= target <= fitted[-1]):
        return None
    i = int(np.searchsorted(fitted, target))  # first point reaching the target
    if i == 0 or fitted[i] == target:
        return float(math.exp(sizes[i]))
    lo, hi = fitted[i - 1], fitted[i]
    frac = (target - lo) / (hi - lo)
    return float(math.exp(sizes[i - 1] + frac * (sizes[i] - sizes[i - 1])))
