"""The quantize pipeline in composable steps, shared by quantize jobs, sweeps and searches.

``load_model`` → ``quantize_model`` → ``build_onnx`` → ``package`` (files:
``quantcore.compress.artifacts``), then ``quantcore.report.build.build_report``. A sweep
loads once, then calls ``quantize_model`` and ``package_size`` per point without writing
files; ``quantcore.jobs.quantize`` chains them all for a quantize job.

Memory: a loaded model keeps its float data where it was (the parsed ONNX, or memory-mapped
weights files). ``quantize_model`` quantizes ``layer`` and ``channel`` tensors one at a time
(a few threads, each holding one tensor's temporaries) and keeps only codes, decoders and the
package's coded sections (``CodedWeight``), never a second float copy of the model; ``model``
granularity needs every weight at once (one quantizer). A job then builds the quantized ONNX
and closes the source (protobuf frees a parsed model only as a whole) before serializing.
A quantize job on an ONNX model goes further (``quantcore.compress.stream``): ``sink`` sends
each tensor's codes and section to disk as it is done, and the files are written from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantcore.blas_threads import one_blas_thread
from quantcore.compress.allocate import Allocation, allocate, model_samples
from quantcore.compress.auto_plan import AutoChoice, model_plan
from quantcore.compress.hessian import LayerStats
from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.rdoq import rdoq_result
from quantcore.compress.rdoq_choice import choose as choose_rdoq
from quantcore.compress.results import TensorRequest
from quantcore.compress.trellis import trellis_result
from quantcore.design.fits import fit_pooled
from quantcore.formats.container import build_container
from quantcore.formats.containers import container_name
from quantcore.formats.load import Model, load_model
from quantcore.formats.onnx_writer import (
    WrittenModel,
    rewrite,
)
from quantcore.formats.qpack import Package, encode_body, pack
from quantcore.formats.roles import Selection, Skipped, select_weights
from quantcore.formats.weights_io import WeightsModel
from quantcore.quantizers.codes import Decoder, FloatArray, IntArray, decode
from quantcore.spec import Granularity, QuantSpec

__all__ = [
    "CodedWeight",
    "Model",
    "QuantizedModel",
    "build_onnx",
    "load_model",
    "package",
    "package_size",
    "quantize_model",
    "select_tensors",
]

Fraction = Callable[[float], None]

# Weights pooled (sampled evenly across tensors) for the distribution fits.
FIT_SAMPLE = 400_000
FIT_SEED = 0
# Threads quantizing tensors at once (each holds one tensor's temporaries).
WORKERS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class CodedWeight:
    """A quantized tensor as the writers need it: codes and decoder, and the layer's report
    row. The dequantized floats are not kept; ``dequantized()`` recomputes them exactly."""

    name: str
    codes: IntArray
    code_min: int
    code_max: int
    decoder: Decoder
    layer: dict[str, Any]
    body: bytes  # the codes' section of model.qpack (qpack.encode_body)

    def dequantized(self) -> FloatArray:
        return decode(self.codes, self.decoder)


@dataclass(frozen=True, kw_only=True)
class QuantizedModel:
    source: Model
    spec: QuantSpec
    weights: tuple[CodedWeight, ...]
    skipped: tuple[Skipped, ...]
    distribution: dict[str, Any] | None
    quantize_s: float
    allocation: Allocation | None = None  # spec.target: the common step and its quantizers

    @property
    def coded(self) -> dict[str, CodedWeight]:
        return {w.name: w for w in self.weights}


def select_tensors(model: Model, spec: QuantSpec) -> Selection:
    """The tensors ``spec`` quantizes; ``NoWeightsError`` if there are none."""
    return select_weights([t.candidate() for t in model.tensors], spec)


def _request(
    model: Model, name: str, spec: QuantSpec, stats: Mapping[str, LayerStats],
    plan: Mapping[str, AutoChoice],
    allocation: Allocation | None = None,
) -> TensorRequest:
    tensor = next(t for t in model.tensors if t.name == name)
    weights = model.array(name)  # in its own dtype: the layer report names it
    return TensorRequest(
        name=name,
        weights=weights,
        quantizer=allocation.quantizers[name] if allocation else spec.quantizer_for(name),
        channel_axis=tensor.channel_axis,
        block_axis=tensor.block_axis,
        block_trailing=tensor.block_trailing,
        stats=stats.get(name),
        group_size=plan[name].group_size if name in plan else None,
    )


def _sample(weights: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """About ``share`` of the weights, drawn uniformly with replacement (cheap at any size)."""
    flat = weights.reshape(-1)
    count = min(flat.size, max(1, math.ceil(flat.size * share)))
    if count == flat.size:
        return flat.astype(np.float32)
    return flat[rng.integers(0, flat.size, size=count)].astype(np.float32)


def _quantize_batch(
    requests: list[TensorRequest], spec: QuantSpec, share: float, seed: int
) -> tuple[list[CodedWeight], list[np.ndarray]]:
    """Quantize one batch and code it for the package (on a worker thread: the coding of
    one tensor overlaps the NumPy work of the next). ``requests`` is emptied as soon as it
    is used, and the dequantized floats are dropped before coding, to bound memory."""
    rng = np.random.default_rng([FIT_SEED, seed])
    samples = [_sample(r.weights, share, rng) for r in requests]
    results = quantize_tensors(
        requests, spec.granularity, group_size=spec.group_size, zero_point=spec.zero_point
    )
    if spec.trellis:
        results = [trellis_result(r, q.weights) for r, q in zip(results, requests, strict=True)]
    elif spec.rdoq:
        results = [rdoq_result(r, q.weights) for r, q in zip(results, requests, strict=True)]
    requests.clear()
    parts = [
        (r.name, r.quantized.codes, r.quantized.code_min, r.quantized.code_max,
         r.quantized.decoder, {**r.report.to_dict(), "notes": list(r.notes)}, r.counts)
        for r in results
    ]  # fmt: skip
    del results
    coded = []
    for name, codes, code_min, code_max, decoder, layer, counts in parts:
        weight = CodedWeight(
            name=name,
            codes=codes,
            code_min=int(code_min),
            code_max=int(code_max),
            decoder=decoder,
            layer=layer,
            body=b"",
        )
        body = encode_body(weight, spec.entropy_coding, counts)
        coded.append(dataclasses.replace(weight, body=body))
    return coded, samples


def _held_up(pending: deque[tuple[list[str], Future[Any]]], sizes: Mapping[str, int]) -> bool:
    """Whether the batches behind the oldest pending one hold as many parameters as it
    does: until then more are submitted, so that a large tensor at the head does not leave
    the other workers idle, and what waits behind it (results are taken in the model's
    order) stays smaller than it."""
    params = [sum(sizes[n] for n in names) for names, _ in pending]
    return sum(params[1:]) >= params[0]


def quantize_model(
    model: Model,
    spec: QuantSpec,
    progress: Fraction | None = None,
    *,
    workers: int = WORKERS,
    stats: Mapping[str, LayerStats] | None = None,
    sink: Callable[[CodedWeight], CodedWeight] | None = None,
) -> QuantizedModel:
    """Quantize the tensors ``spec`` selects; ``progress`` gets the share done in [0, 1].

    ``stats``: the calibration inputs' statistics of some tensors (``quantcore.jobs``
    captures them for ``calibration="gptq"``); at granularity group/auto those tensors are
    rounded by GPTQ (``quantcore.compress.gptq``).

    Tensors are quantized on ``workers`` threads (NumPy releases the GIL), in the model's
    order: ``workers`` at a time plus one read ahead (so that no worker waits for a read), and
    more while those behind the oldest pending one hold fewer parameters than it (``_held_up``).

    ``sink`` gets each quantized tensor, in the model's order, as soon as it is done, and
    gives back what to keep of it (``quantcore.compress.stream`` writes the codes and the
    package section to disk and keeps neither in memory).
    """
    start = time.perf_counter()
    selection = select_tensors(model, spec)
    sizes = {t.name: t.size for t in model.tensors}
    total = max(sum(sizes[n] for n in selection.quantize), 1)
    share = min(1.0, FIT_SAMPLE / total)
    plan = model_plan(model, spec, selection.quantize)
    if spec.granularity is Granularity.MODEL:
        batches = [list(selection.quantize)]  # one quantizer sees every weight
    else:
        batches = [[n] for n in selection.quantize]
    allocation = None
    coded_already: dict[str, tuple[list[CodedWeight], list[np.ndarray]]] = {}
    # On the BLAS threads the tensors below get, so that sums (and steps) come out the same.
    with _one_blas_thread(workers):
        samples_of = model_samples(model, selection.quantize) if spec.target else {}
        # The searches' measurements and the probe's tensors on the job's threads.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as plan_pool:
            if spec.target and spec.rdoq_auto:
                position = {name: i for i, name in enumerate(selection.quantize)}

                def code(mode: QuantSpec, plan_of: Allocation, name: str) -> tuple[Any, int]:
                    request = _request(model, name, mode, stats or {}, plan, plan_of)
                    done = _quantize_batch([request], mode, share, position[name])
                    return done, sum(len(w.body) for w in done[0])

                allocation, coded_already = choose_rdoq(
                    spec, selection.quantize, sizes, samples_of, code, map_tensors=plan_pool.map)
            elif spec.target:
                allocation = allocate(samples_of, spec.target, rdoq=spec.rdoq,
                                      trellis=spec.trellis, map_samples=plan_pool.map)
        del samples_of
    # What the tensors are quantized with: "auto" becomes the mode it chose.
    applied = spec if allocation is None else dataclasses.replace(
        spec, trellis=allocation.trellis, rdoq_auto=False)  # fmt: skip
    samples: list[np.ndarray] = []
    coded: list[CodedWeight] = []
    done = 0
    # The tensors' threads are the parallelism: OpenBLAS's own threads on top of them (its
    # inversions and factorizations in GPTQ) fought them for the cores and took 7x longer.
    with _one_blas_thread(workers), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[tuple[list[str], Future[Any]]] = deque()

        def collect() -> None:
            nonlocal done
            names, future = pending.popleft()
            batch_coded, batch_samples = future.result()
            coded.extend(batch_coded if sink is None else [sink(w) for w in batch_coded])
            del batch_coded
            samples.extend(batch_samples)
            done += sum(sizes[n] for n in names)
            if progress is not None:
                progress(done / total)

        for index, names in enumerate(batches):
            if names[0] in coded_already:  # rdoq "auto" probed it in the mode it applies
                ready: Future[Any] = Future()
                ready.set_result(coded_already.pop(names[0]))
                pending.append((names, ready))
                continue
            # Reading stays on this thread: protobuf messages are not shared between threads.
            requests = [_request(model, n, spec, stats or {}, plan, allocation) for n in names]
            pending.append((names, pool.submit(_quantize_batch, requests, applied, share, index)))
            del requests
            while len(pending) > max(1, workers) and _held_up(pending, sizes):
                collect()
        while pending:
            collect()
    distribution = fit_pooled(np.concatenate(samples)) if samples else None
    for weight in coded:  # why auto gave each tensor its blocks (the layer row's "choice")
        if weight.name in plan:
            weight.layer["choice"] = plan[weight.name].reason
    return QuantizedModel(
        source=model,
        spec=spec,
        weights=tuple(coded),
        skipped=selection.skipped,
        distribution=distribution,
        quantize_s=time.perf_counter() - start,
        allocation=allocation,
    )


def _one_blas_thread(workers: int) -> contextlib.AbstractContextManager[Any]:
    """BLAS on one thread while ``workers`` > 1 threads quantize tensors side by side."""
    return one_blas_thread() if workers > 1 else contextlib.nullcontext()


def build_onnx(qmodel: QuantizedModel, *, inline_codes: bool = True) -> WrittenModel:
    """The quantized ONNX model (for weights-only inputs, the container graph); each layer's
    row records the runnable container its codes got (``int4``, ``uint8``, ...).
    ``inline_codes=False``: the code tensors are left without data (a skeleton for
    ``quantcore.compress.stream``)."""
    coded = qmodel.coded
    source = qmodel.source
    if isinstance(source, WeightsModel):
        written = rewrite(build_container(source, coded), coded, inline_codes=inline_codes)
    else:
        written = rewrite(source, coded, inline_codes=inline_codes)
    for weight in qmodel.weights:
        weight.layer["container"] = container_name(written.codes[weight.name].elem_type)
    return written


def runnable_block(written: WrittenModel) -> dict[str, Any]:
    """The report's ``runnable``: the written model's opset and how its containers came."""
    return {"opset": written.opset, "notes": list(written.notes)}


def package(
    qmodel: QuantizedModel, written: WrittenModel | None = None, onnx_bytes: bytes | None = None
) -> Package:
    """The ``.qpack`` of ``qmodel`` in memory."""
    written = written or build_onnx(qmodel)
    return pack(
        written,
        qmodel.coded,
        fmt=qmodel.source.format,
        entropy_coding=qmodel.spec.entropy_coding,
        onnx_bytes=onnx_bytes,
        bodies={w.name: w.body for w in qmodel.weights},
    )


def package_size(qmodel: QuantizedModel) -> int:
    """Bytes of ``model.qpack`` for ``qmodel``, computed without writing anything."""
    return len(package(qmodel).data)
