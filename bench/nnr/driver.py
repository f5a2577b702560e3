"""Run MPEG NNR's reference coder (DeepCABAC in ``nncodec``) over a set of tensors.

This script runs inside nncodec's own virtual environment (``bench.nnr.reference`` builds it),
never in the project's: ``python driver.py TENSORS.npz OUT_DIR QP [QP ...]``, or
``python driver.py --serve`` (below).

``TENSORS.npz`` holds float32 arrays ``t0, t1, ...`` (every tensor of rank 2 or more, so the
coder treats each as a weight and codes it at the given QP, not at the finer QP it uses for
biases). For each QP it writes ``OUT_DIR/qp<QP>.npz`` with the tensors decoded from the
bitstream (the reconstruction a decoder gets) and ``OUT_DIR/qp<QP>.nnr``, the bitstream itself,
and ``OUT_DIR/summary.json`` with the
bitstream's bytes and the coding time per QP (``decode_cpu_s``: the CPU seconds of
``nnc.decompress`` alone, best of ``DECODE_REPEATS``: timed once, the same QP's decoding
speed moved by up to 40% between runs on a virtual machine).

``--serve`` times decoding on request, so that the benchmark can time the reference and our
decoder alternately in the same minutes: each line read on stdin names a bitstream file, and
the line written back is the CPU seconds of one ``nnc.decompress`` of it.

nncodec's ``nnc`` module imports its PyTorch and TensorFlow front ends at import time; only
the array path is used here, so those modules are stubbed and torch is never needed.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import numpy as np

DECODE_REPEATS = 5
_FRONT_ENDS = (
    "nncodec.framework",
    "nncodec.framework.tensorflow_model",
    "nncodec.framework.pytorch_model",
    "nncodec.framework.use_case_init",
)


def _nnc() -> types.ModuleType:
    for name in _FRONT_ENDS:
        sys.modules.setdefault(name, types.ModuleType(name))
    from nncodec import nnc

    return nnc


def serve() -> int:
    """Decode the bitstream named on each line of stdin; answer its CPU seconds."""
    nnc = _nnc()
    for line in sys.stdin:
        stream = bytearray(Path(line.strip()).read_bytes())
        cpu = time.process_time()
        nnc.decompress(stream)
        print(time.process_time() - cpu, flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        return serve()
    nnc = _nnc()
    source, out_dir, qps = Path(argv[0]), Path(argv[1]), [int(q) for q in argv[2:]]
    with np.load(source) as data:
        params = {k: np.ascontiguousarray(data[k], dtype=np.float32) for k in data.files}
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for qp in qps:
        start = time.perf_counter()
        stream = nnc.compress(params, bitstream_path=None, qp=qp, return_bitstream=True)
        encode_s = time.perf_counter() - start
        decode_cpu_s = float("inf")
        for _ in range(DECODE_REPEATS):
            cpu = time.process_time()
            decoded = nnc.decompress(bytearray(stream))
            decode_cpu_s = min(decode_cpu_s, time.process_time() - cpu)
        (out_dir / f"qp{qp}.nnr").write_bytes(stream)
        np.savez(out_dir / f"qp{qp}.npz", **{k: decoded[k].reshape(params[k].shape)
                                             for k in params})
        summary.append({"qp": qp, "bytes": len(stream), "encode_s": encode_s,
                        "decode_s": time.perf_counter() - start - encode_s,
                        "decode_cpu_s": decode_cpu_s})
        print(f"qp {qp}: {len(stream)} bytes, {encode_s:.1f} s", file=sys.stderr, flush=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
