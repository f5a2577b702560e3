"""Compile (or load) the numba kernels that quantize jobs and unpacks use, before a job needs
them.

The kernels are compiled on their first call and kept in numba's on-disk cache, so only a
machine's first job pays for them: about 20 s of compilation at 8 bits and 15 s more at 4
bits on a 2-core machine, where a warm job takes 2-3 s. A container whose cache is not in
its image pays that on every start, in its first jobs. ``warm_kernels`` runs the default
jobs on a small generated model (convolutions, a Gemm, a MatMul and an LSTM: per-channel,
per-group and recurrent layers) at 8, 4 and 3 bits and with two targets (trellis-coded
quantization and the context coders, on 8- and 16-bit codes), and a 4-bit job on a model of
token ids (GPTQ on synthetic tokens), then unpacks each package: the jobs reach the same
kernels, with the same argument types, as a real model's. It also runs one job of each spec
off the default path whose kernels those miss (other methods, per-channel, wide codes): 190 s
on a 2-core machine, after which a first job of any of 46 specs compiles nothing. The
package's coders are also compiled for every stream version and code width directly (which
of them a job's tensors take depends on their codes). The Docker image runs it at build
time (``quantserve warm``) into ``NUMBA_CACHE_DIR``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The jobs that reach every kernel of the default paths (and of the target mode's), then the
# specs whose kernels (or argument types) those miss: without them, a job's first such spec
# after ``quantserve warm`` compiled for 1-9 s (``bench/bench_first_job.py``).
WARM_SPECS: tuple[dict[str, Any], ...] = (
    {"bits": 8},
    {"bits": 4},
    {"bits": 3},
    {"target": {"weight_sqnr_db": 24.0}, "rdoq": "auto"},
    {"target": {"weight_sqnr_db": 48.0}, "rdoq": "auto"},  # codes wider than 8 bits
    {"bits": 8, "granularity": "channel"},  # channels side by side and across the rows
    {"bits": 12, "granularity": "channel"},  # their codes wider than 8 bits
    {"bits": 4, "granularity": "channel", "support": "mse"},
    {"bits": 4, "granularity": "group", "group_size": 128},  # blocks too long for lanes
    {"bits": 10, "granularity": "group"},  # blocks' codes wider than 8 bits
    {"bits": 4, "granularity": "group", "support": "percentile", "support_value": 99.9},
    {"bits": 8, "method": "mulaw"},
    {"bits": 4, "method": "log"},
    {"bits": 8, "method": "log", "granularity": "channel", "support": "mse"},  # and max_abs
    {"bits": 4, "method": "log", "granularity": "layer", "support": "mse"},  # designs in a batch
    {"bits": 6, "method": "float", "exponent_bits": 3, "mantissa_bits": 2},
)
# The job ``warm_up_job`` runs: the default one (groups, the package's coders, the fidelity
# check's onnxruntime session).
WARM_UP_SPEC: dict[str, Any] = {"bits": 8}
# A model of token ids is calibrated on synthetic tokens at 4 bits and under (GPTQ).
TOKEN_SPECS: tuple[dict[str, Any], ...] = ({"bits": 4},)


@dataclass(frozen=True, kw_only=True)
class WarmRun:
    model: str  # the generated model's file name: image.onnx or tokens.onnx
    spec: dict[str, Any]
    seconds: float  # the job and the unpack of its package


def warm_kernels(work_dir: Path | None = None) -> list[WarmRun]:
    """Compile the coders, run ``WARM_SPECS`` on ``warm_model`` and ``TOKEN_SPECS`` on
    ``token_model``, and unpack each package (files under ``work_dir``, a temporary folder
    by default, removed afterwards). ``RuntimeError`` where a kernel compiled in this
    process could not be saved in numba's cache (``jit_cache.check_saved``)."""
    from quantcore.coding import entropy
    from quantcore.formats.qpack import unpack_file
    from quantcore.jobs.base import JobInput, JobKind
    from quantcore.jobs.run import run_job

    entropy.compile_kernels()  # every stream version's coders, for 8- and 16-bit codes
    with tempfile.TemporaryDirectory(prefix="quantserve-warm-", dir=work_dir) as tmp:
        root = Path(tmp)
        (root / "image.onnx").write_bytes(warm_model())
        (root / "tokens.onnx").write_bytes(token_model())
        jobs = [("image.onnx", s) for s in WARM_SPECS] + [("tokens.onnx", s) for s in TOKEN_SPECS]
        runs = []
        for k, (name, spec) in enumerate(jobs):
            started = time.perf_counter()
            out = root / f"job{k}"
            run_job(JobInput(kind=JobKind.QUANTIZE, model_path=root / name, spec=spec), out)
            unpack_file(out / "model.qpack", root / f"restored{k}.onnx")
            runs.append(WarmRun(model=name, spec=spec, seconds=time.perf_counter() - started))
    from quantcore.jit_cache import check_saved

    check_saved()  # what was compiled is in the cache, or this fails
    return runs


def warm_up_job(folder: Path) -> float:
    """Run the default job once on ``warm_model`` in ``folder`` (files left there for the
    caller to remove); returns its seconds. A process that will run jobs calls it to load
    the job path (numba's target and the default path's kernels, onnx, onnxruntime) before
    its first job, which otherwise pays for that loading (a worker's pool processes:
    ``workers.warmup``)."""
    from quantcore.jobs.base import JobInput, JobKind
    from quantcore.jobs.run import run_job

    started = time.perf_counter()
    model = folder / "warm.onnx"
    model.write_bytes(warm_model())
    run_job(JobInput(kind=JobKind.QUANTIZE, model_path=model, spec=WARM_UP_SPEC), folder / "out")
    return time.perf_counter() - started


def warm_model(seed: int = 0) -> bytes:
    """A small ONNX model with the layer kinds the quantizer treats apart: two convolutions
    (one depthwise), a Gemm and a MatMul on an image, an LSTM on a sequence."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def laplace(name: str, *shape: int) -> onnx.TensorProto:
        return _laplace(rng, name, shape)

    hidden, features, steps = 32, 16, 12
    inits = [
        laplace("conv1.w", 32, 3, 3, 3), laplace("conv1.b", 32),
        laplace("dw.w", 32, 1, 3, 3),
        laplace("conv2.w", 64, 32, 3, 3),
        laplace("fc1.w", 512, 64 * 4 * 4), laplace("fc1.b", 512),
        laplace("fc2.w", 512, 256),
        laplace("lstm.W", 1, 4 * hidden, features), laplace("lstm.R", 1, 4 * hidden, hidden),
        laplace("lstm.B", 1, 8 * hidden),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["image", "conv1.w", "conv1.b"], ["c1"], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "dw.w"], ["d1"], pads=[1, 1, 1, 1], group=32),
        helper.make_node("Conv", ["d1", "conv2.w"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Reshape", ["r2", "flat"], ["v"]),
        helper.make_node("Gemm", ["v", "fc1.w", "fc1.b"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["h"]),
        helper.make_node("MatMul", ["h", "fc2.w"], ["scores"]),
        helper.make_node("LSTM", ["sequence", "lstm.W", "lstm.R", "lstm.B"], ["states"],
                         hidden_size=hidden),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "warm",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 16, 16]),
         helper.make_tensor_value_info("sequence", TensorProto.FLOAT, [steps, "n", features])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 256]),
         helper.make_tensor_value_info("states", TensorProto.FLOAT, [steps, 1, "n", hidden])],
        inits,
    )  # fmt: skip
    return _serialized(graph)


def token_model(seed: int = 1) -> bytes:
    """A small encoder of token ids: an embedding table, a 1-D convolution over the tokens,
    then two MatMul layers."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    vocab, width, tokens = 1000, 128, 16
    inits = [_laplace(rng, name, shape)
             for name, shape in (("embed", (vocab, width)), ("conv", (64, width, 3)),
                                 ("up", (64, 256)), ("down", (256, width)))]  # fmt: skip
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["x"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["xt", "conv"], ["c"], pads=[1, 1]),
        helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["ct", "up"], ["u"]),
        helper.make_node("Relu", ["u"], ["a"]),
        helper.make_node("MatMul", ["a", "down"], ["hidden"]),
    ]
    graph = helper.make_graph(
        nodes, "tokens",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["n", tokens])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["n", tokens, width])],
        inits,
    )  # fmt: skip
    return _serialized(graph)


def _laplace(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> Any:
    """A Laplacian float32 initializer of scale 1/sqrt(fan-in) (the first axis is the outputs;
    a vector is its own fan-in)."""
    from onnx import numpy_helper

    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    w = rng.laplace(0.0, 1.0 / np.sqrt(fan_in), size=shape).astype(np.float32)
    return numpy_helper.from_array(w, name)


def _serialized(graph: Any) -> bytes:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
