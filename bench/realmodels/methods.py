"""The quantizers under comparison: our CLI, and the peers a user would otherwise reach for.

- ``quantize_cli``: ``quantserve quantize MODEL --spec FILE --out DIR`` as a subprocess, the
  same code path as a worker's job, so the benchmark measures what users get.
- ``ort_dynamic``: onnxruntime ``quantize_dynamic`` (int8 weights, activations quantized at
  run time), per tensor or per channel; the stock 8-bit answer.
- ``ort_matmul_nbits``: onnxruntime ``MatMulNBitsQuantizer``, 4-bit blocks; it rewrites only
  ``MatMul`` (and ``Gather``) nodes, so convolutional models come out nearly unchanged.
- ``nncf_compress``: NNCF ``compress_weights`` (INT8_ASYM per channel, or INT4_SYM groups).

The last two refuse (NNCF: per-channel needs opset 13) or break (MatMulNBits: stamps opset
21 on the graph without converting its nodes) on older opsets, as most shipped models are.
A user would convert first, so they get the model converted with ``onnx.version_converter``
(opset 21 and 13 respectively); if that conversion fails, so does the peer.

Each returns the path of the quantized model or raises; ``BaselineUnavailable`` means the
peer could not run at all here (not installed, no API), which a report shows as "n/a".
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import onnx.version_converter

CLI_ENV = "QUANTSERVE_CLI"
REPO_ROOT = Path(__file__).resolve().parents[2]


class BaselineUnavailable(RuntimeError):
    """The method cannot run on this machine (missing package or API)."""


class QuantizeError(RuntimeError):
    """The method ran and failed on this model."""


def cli_path() -> Path:
    """``$QUANTSERVE_CLI``, else the ``quantserve`` beside this interpreter, else the repo's
    ``.venv``, else the one on ``PATH``."""
    candidates = [os.environ.get(CLI_ENV), Path(sys.executable).parent / "quantserve",
                  REPO_ROOT / ".venv" / "bin" / "quantserve", shutil.which("quantserve")]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise BaselineUnavailable("no quantserve executable (set QUANTSERVE_CLI)")


def quantize_cli(
    model: Path,
    spec: Mapping[str, Any],
    out_dir: Path,
    *,
    source: Path | None = None,
    timeout_s: float = 600,
) -> Path:
    """Quantize ``model`` with the CLI; ``out_dir`` receives ``model.onnx`` and
    ``report.json`` (read it with ``read_report``). Returns ``out_dir / "model.onnx"``.

    ``source``: a folder holding ``quantcore/``, ``service/`` and ``workers/`` to run instead
    of the installed ones (put first on ``PYTHONPATH``), e.g. a ``git archive`` of a commit,
    so a measurement is not disturbed by edits to the work tree while it runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    spec_file = out_dir.with_name(out_dir.name + ".spec.json")
    spec_file.write_text(json.dumps(dict(spec)))
    cmd = [str(cli_path()), "quantize", str(model), "--spec", str(spec_file),
           "--out", str(out_dir), "--quiet"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as e:
        raise QuantizeError(f"quantserve timed out after {timeout_s:.0f}s") from e
    result = out_dir / "model.onnx"
    if done.returncode != 0 or not result.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise QuantizeError(f"quantserve exit {done.returncode}: {' | '.join(tail)}")
    return result


def read_report(out_dir: Path) -> dict[str, Any]:
    """The CLI's ``report.json`` for a run made by ``quantize_cli``."""
    report: dict[str, Any] = json.loads((out_dir / "report.json").read_text())
    return report


def at_least_opset(model: Path, opset: int) -> onnx.ModelProto:
    """The model, converted to ``opset`` by ``onnx.version_converter`` if it is older."""
    proto = onnx.load(str(model))
    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= opset:
        return proto
    try:
        return onnx.version_converter.convert_version(proto, opset)
    except Exception as e:
        raise QuantizeError(f"opset {current} -> {opset} conversion failed: {e}") from e


def ort_dynamic(model: Path, out_dir: Path, *, per_channel: bool) -> Path:
    """onnxruntime ``quantize_dynamic`` with QInt8 weights."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise BaselineUnavailable(f"onnxruntime.quantization: {e}") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "model.onnx"
    quantize_dynamic(model, out, per_channel=per_channel, weight_type=QuantType.QInt8)
    return out


def ort_matmul_nbits(model: Path, out_dir: Path, *, block_size: int, bits: int = 4) -> Path:
    """onnxruntime ``MatMulNBitsQuantizer``: symmetric ``bits``-bit blocks (the defaults of
    its command line) on ``MatMul`` and ``Gather`` weights, on the model at opset 21."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as e:  # it needs onnx_ir since onnxruntime 1.2x
        raise BaselineUnavailable(f"MatMulNBitsQuantizer: {e}") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "model.onnx"
    quant = MatMulNBitsQuantizer(
        at_least_opset(model, 21), bits=bits, block_size=block_size, is_symmetric=True,
        op_types_to_quantize=("MatMul", "Gather"),
    )
    quant.process()
    quant.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


def nncf_compress(model: Path, out_dir: Path, *, bits: int, group_size: int = 128) -> Path:
    """NNCF ``compress_weights``: ``bits=8`` is INT8_ASYM per channel; ``bits=4`` is INT4_SYM
    with ``group_size`` groups (smaller where a layer's width needs it) on every layer it can
    (ratio 1), NNCF keeping embeddings and the last layer at its INT8 backup as it does by
    default. The model is taken at opset 13 or later."""
    try:
        import nncf
    except ImportError as e:
        raise BaselineUnavailable(f"nncf not installed ({e})") from e
    logging.getLogger("nncf").setLevel(logging.ERROR)
    if bits == 8:
        kwargs: dict[str, Any] = {"mode": nncf.CompressWeightsMode.INT8_ASYM}
    elif bits == 4:
        from nncf.quantization.advanced_parameters import (
            AdvancedCompressionParameters,
            GroupSizeFallbackMode,
        )

        # ADJUST: a layer whose width ``group_size`` doesn't divide gets smaller groups
        # instead of failing the whole model.
        advanced = AdvancedCompressionParameters(
            group_size_fallback_mode=GroupSizeFallbackMode.ADJUST
        )
        kwargs = {"mode": nncf.CompressWeightsMode.INT4_SYM, "ratio": 1.0,
                  "group_size": group_size, "advanced_parameters": advanced}
    else:
        raise BaselineUnavailable(f"nncf: no {bits}-bit integer mode")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "model.onnx"
    chatter = io.StringIO()  # its tables and progress bars
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        compressed = nncf.compress_weights(at_least_opset(model, 13), **kwargs)
    onnx.save(compressed, str(out))
    return out


def rtn_blocks(model: Path, out_dir: Path, *, bits: int = 4, block: int = 32) -> Path:
    """Plain round-to-nearest with one asymmetric min-max scale (float32) and integer zero
    point per block of ``block`` weights along each weight's reduction axis: the scheme of
    onnxruntime's MatMulNBits and NNCF's INT4 group modes, here applied to every weight our
    policy selects (Conv included), so it is the baseline for our 4-bit default on any model.

    The dequantized weights are written back as float (the fidelity is the scheme's); its
    runnable size is what ``rtn_size`` estimates for packed codes."""
    import numpy as np
    from onnx import numpy_helper

    from quantcore.compress.groups import block_view
    from quantcore.compress.pipeline import load_model, select_tensors
    from quantcore.formats.onnx_reader import walk_graphs
    from quantcore.spec import QuantSpec

    source = load_model(model)
    chosen = set(select_tensors(source, QuantSpec.from_dict({"bits": bits})).quantize)
    proto = onnx.load(str(model))
    values: dict[str, np.ndarray] = {}
    for t in source.tensors:
        if t.name not in chosen:
            continue
        w = np.asarray(source.array(t.name), np.float32)
        axis = t.block_axis if t.block_axis is not None else w.ndim - 1
        view = block_view(w.shape, axis % w.ndim, t.block_trailing)
        values[t.name] = _rtn(w.reshape(view), axis % w.ndim, bits, block).reshape(w.shape)
    for graph, _ in walk_graphs(proto.graph, "graph"):
        for init in graph.initializer:
            if init.name in values:
                init.CopyFrom(numpy_helper.from_array(values[init.name], init.name))
        for node in graph.node:
            if node.op_type == "Constant" and node.output and node.output[0] in values:
                node.attribute[0].t.CopyFrom(numpy_helper.from_array(values[node.output[0]]))
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "model.onnx"
    onnx.save(proto, str(out))
    (out_dir / "rtn.json").write_text(json.dumps(
        {"params": int(sum(v.size for v in values.values())), "bits": bits, "block": block}
    ))
    return out


def rtn_size(model: Path, out_dir: Path) -> int:
    """The bytes ``rtn_blocks``' model would take with packed codes, a float32 scale and a
    ``bits``-wide zero point per block: ``params·(bits + (32 + bits)/block)/8`` plus the
    float model's other bytes."""
    meta = json.loads((out_dir / "rtn.json").read_text())
    params, bits, block = meta["params"], meta["bits"], meta["block"]
    rest = model.stat().st_size - 4 * params
    return int(params * (bits + (32 + bits) / block) / 8 + rest)


def _rtn(view: Any, axis: int, bits: int, block: int) -> Any:
    import numpy as np

    length = view.shape[axis]
    count = -(-length // block)
    pad = [(0, count * block - length) if a == axis else (0, 0) for a in range(view.ndim)]
    padded = np.pad(view, pad)
    blocks = padded.reshape((*view.shape[:axis], count, block, *view.shape[axis + 1 :]))
    lo = np.minimum(blocks.min(axis=axis + 1, keepdims=True), 0.0)
    hi = np.maximum(blocks.max(axis=axis + 1, keepdims=True), 0.0)
    levels = (1 << bits) - 1
    scale = ((hi - lo) / levels).astype(np.float32)
    # The codes are found in float64: a block of subnormal weights (seen in real models) has a
    # subnormal float32 scale whose reciprocal overflows float32, and inf·0 gave NaN weights.
    wide = scale.astype(np.float64)
    inv = np.divide(1.0, wide, out=np.zeros_like(wide), where=wide > 0)
    zero = np.clip(np.rint(-lo * inv), 0, levels)
    q = np.clip(np.rint(blocks * inv) + zero, 0, levels)
    deq = ((q - zero) * wide).astype(np.float32).reshape(padded.shape)
    return deq[tuple(slice(0, length) if a == axis else slice(None) for a in range(view.ndim))]
