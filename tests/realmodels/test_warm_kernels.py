"""``quantserve warm`` compiles every kernel that default jobs on real models use: after it,
with the same numba cache, quantizing real models at 8 and 4 bits and unpacking their
packages compile nothing (numba writes one ``.nbc`` file per compiled signature); nor do
the other methods, granularities and code widths on a real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# Kinds the generated warm-up models must stand for: convolutions with an LSTM and a Gemm
# (an OCR reader), a transformer on token ids (calibrated on synthetic tokens at 4 bits), a
# byte classifier (token ids into a 1-D convolution).
MODELS = ("captcha-ocr", "minilm-l3", "magika")
# Specs off the default path whose kernels (or argument types) the default jobs do not reach,
# run on the OCR reader (convolutions, an LSTM, a Gemm).
OTHER_SPECS = (
    {"bits": 8, "granularity": "channel"},
    {"bits": 12, "granularity": "channel"},
    {"bits": 4, "granularity": "group", "group_size": 128},
    {"bits": 10, "granularity": "group"},
    {"bits": 4, "granularity": "group", "support": "percentile", "support_value": 99.0},
    {"bits": 8, "method": "mulaw", "granularity": "channel"},
    {"bits": 4, "method": "log"},
    {"bits": 6, "method": "float", "exponent_bits": 3, "mantissa_bits": 2},
)


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "service.cli", *args], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_after_warm_jobs_on_real_models_compile_no_kernel(
    real_model: Callable[[str], Path], tmp_path: Path
) -> None:
    cache = tmp_path / "numba-cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTSERVE_")}
    env["NUMBA_CACHE_DIR"] = str(cache)
    report = json.loads(_cli(env, "warm"))
    assert len(report["jobs"]) >= 5
    warmed = set(cache.rglob("*.nbc"))
    assert len(warmed) > 30  # the quantizers', the coders' and GPTQ's kernels

    for name in MODELS:
        for bits in (8, 4):
            out = tmp_path / f"{name}-{bits}"
            _cli(env, "quantize", str(real_model(name)), "--spec", json.dumps({"bits": bits}),
                 "--out", str(out), "--quiet")  # fmt: skip
            _cli(env, "unpack", str(out / "model.qpack"), "--out", str(out / "restored.onnx"))
            assert (out / "restored.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    for k, spec in enumerate(OTHER_SPECS):
        _cli(env, "quantize", str(real_model("captcha-ocr")), "--spec", json.dumps(spec),
             "--out", str(tmp_path / f"other-{k}"), "--quiet")  # fmt: skip
    compiled = sorted(p.name for p in set(cache.rglob("*.nbc")) - warmed)
    assert compiled == [], f"compiled on first use after the warm-up: {compiled}"
