"""Batched onnxruntime evaluation of a float model and its quantized counterpart.

Both models see the same batches, streamed from the ``.npz`` (see ``dataset.py``), so memory
holds one batch of inputs and outputs at a time whatever the size of the set. A model whose
batch dimension is fixed to ``b`` is run in batches of exactly ``b`` (``b = 1``: sample by
sample); a last partial batch is padded by repeating its last sample and the padded rows'
outputs are dropped.

The scores output (first float output of rank 2) gives top-1/top-5 and agreement; every float
output gives an output SQNR (see ``metrics.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from quantcore.errors import InvalidDatasetError, InvalidModelError
from quantcore.evaluate.dataset import EvalSet, scores_output
from quantcore.evaluate.outputs import class_outputs
from quantcore.evaluate.scores import AccuracyReport, Tally
from quantcore.evaluate.synthetic import SyntheticSet
from quantcore.formats.external import inline_stored, is_external
from quantcore.formats.onnx_reader import read_graph

# Where onnxruntime looks for the external data of a model given as bytes.
EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"
# A quantized model evaluated in this many batches or fewer gets an unoptimised session:
# optimising folds the model's decoding into float weights, which costs onnxruntime far more
# than decoding at every run (a 53.4M-parameter model: 0.9-1.7 s to build against 0.1 s more
# a run; captcha-ocr 0.4 s against 0.07), and the synthetic fidelity check runs three batches.
FEW_RUNS = 4


def session(
    model: bytes | Path, *, threads: int | None = None, folder: Path | None = None,
    optimize: bool = True,
) -> ort.InferenceSession:
    """A CPU session with onnxruntime's default graph optimisations (none when not
    ``optimize``); ``threads`` caps the intra- and inter-op thread pools (None: onnxruntime's
    default, one per core); ``folder``: where the external data of a model given as bytes lies.

    A model file is given as its graph with the large initializers left in the file
    (``read_graph``): onnxruntime then reads them from the file itself instead of from a
    parsed copy of the whole model (the catalog's sessions were built 1.5-3.5x faster)."""
    if isinstance(model, Path):
        graph = _graph_in_place(model)
        if graph is not None:
            try:
                return _create(graph.SerializeToString(), threads, model.parent, optimize)
            except InvalidModelError:
                pass  # the file itself, below, says what is wrong with it
        return _create(str(model), threads, None, optimize)
    return _create(model, threads, folder, optimize)


def graph_session(
    graph: onnx.ModelProto, path: Path, *, threads: int | None = None
) -> ort.InferenceSession:
    """A session of ``graph``, ``read_graph(path)`` as the caller changed it (outputs added,
    weights made inputs): the weights it left in ``path`` are read from there by onnxruntime,
    or, should onnxruntime refuse to read that file as external data (as ``onnx`` refuses a
    file with several hard links, such as a worker's input linked from storage, or a
    symbolic link), put back into the graph first."""
    try:
        return _create(graph.SerializeToString(), threads, path.parent)
    except InvalidModelError:
        inline_stored(graph, path)
        return _create(graph.SerializeToString(), threads, path.parent)


def _graph_in_place(path: Path) -> onnx.ModelProto | None:
    """``read_graph(path)``, when it left any initializer in the file (None otherwise, and
    for a file it cannot read: onnxruntime's own load says why)."""
    try:
        graph = read_graph(path)
    except Exception:  # protobuf raises several types for bad bytes
        return None
    if any(is_external(t) for t in graph.graph.initializer):
        return graph
    return None


def _create(
    source: bytes | str, threads: int | None, folder: Path | None, optimize: bool = True
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # Idle pool threads sleep instead of spinning: on a shared or busy machine (the job's own
    # quantizer threads, a second run at a time) spinning burns a quarter more CPU for the
    # same runs. How work is split among the threads, and so every output, is unchanged.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if folder is not None:
        options.add_session_config_entry(EXTERNAL_FOLDER, str(folder))
    # Fatal only: onnxruntime warns at every run of a model whose declared output shape (a
    # fixed batch of 1, say) differs from what it computes, and logs a run's error before it
    # raises it; the first says nothing to a user of the job, the second is raised (and the
    # synthetic inputs' shape probing expects and catches them), and both filled the CLI's
    # terminal and the worker's log (silero-vad: six error lines a job).
    options.log_severity_level = 4
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InvalidModelError(f"onnxruntime cannot load the model: {exc}") from None


def output_roles(proto: onnx.ModelProto) -> tuple[str | None, tuple[str, ...]]:
    """The scores output (top-k, agreement) and the outputs that look like class scores."""
    found = scores_output(proto)
    return (found[0] if found else None), class_outputs(proto)


def _output_roles(model: bytes | Path) -> tuple[str | None, tuple[str, ...]]:
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else read_graph(model)
    return output_roles(proto)


@dataclass(kw_only=True)
class ReferenceCache:
    """The float model's outputs, kept between evaluations on the same set and batch size
    (a sweep or a search evaluates many quantized models against one float model).

    Filled by the first ``evaluate`` that is handed it; later ones skip the float model. When
    the outputs would pass ``max_bytes``, it stops keeping them and every evaluation runs the
    float model again, so memory stays bounded.
    """

    max_bytes: int = 256 * 1024 * 1024
    step: int | None = None
    outputs: tuple[str, ...] = ()  # the names the float model was run for, in order
    scores: str | None = None
    classes: tuple[str, ...] = ()
    batches: list[dict[str, np.ndarray]] = field(default_factory=list)
    complete: bool = False
    overflow: bool = False
    nbytes: int = 0

    def usable(self, step: int, outputs: list[str] | None = None) -> bool:
        fits = outputs is None or tuple(outputs) == self.outputs
        return self.complete and not self.overflow and self.step == step and fits

    def start(self, step: int) -> None:
        """Begin filling for ``step`` (an earlier, interrupted filling is dropped)."""
        self.overflow = self.overflow and self.step == step
        self.step, self.batches, self.nbytes, self.complete = step, [], 0, False

    def keep(self, outputs: dict[str, np.ndarray]) -> None:
        if self.overflow:
            return
        self.nbytes += sum(v.nbytes for v in outputs.values())
        if self.nbytes > self.max_bytes:
            self.overflow, self.batches = True, []
            return
        self.batches.append(outputs)


def evaluate(
    float_model: bytes | Path,
    quantized_model: bytes | Path,
    evalset: EvalSet | SyntheticSet,
    *,
    batch_size: int,
    progress: Callable[[float], None] | None = None,
    threads: int | None = None,
    reference: ReferenceCache | None = None,
) -> AccuracyReport:
    """Run both models over ``evalset`` and compare them (the ``accuracy`` block of docs/api.md).

    ``batch_size`` applies to models with a symbolic batch dimension; ``progress`` receives
    the share of samples done, in (0, 1], after each batch; ``threads`` caps onnxruntime's
    thread pools (a worker that runs several jobs at once sets it); ``reference`` keeps the
    float model's outputs for the next evaluation on the same set (see ``ReferenceCache``).
    """
    if batch_size < 1:
        raise InvalidDatasetError(f"{batch_size=} must be at least 1")
    fixed = evalset.fixed_batch
    step = fixed if fixed is not None else batch_size
    optimize = -(-evalset.samples // step) > FEW_RUNS
    quant = session(quantized_model, threads=threads, optimize=optimize)
    outputs = [o.name for o in quant.get_outputs()]
    merged = None if optimize else _merged_run(quant, outputs, evalset)
    float_outputs = [o.name for o in quant.get_outputs() if o.type == "tensor(float)"]
    cached = reference is not None and reference.usable(step, outputs)
    ref = None if cached else session(float_model, threads=threads)
    if reference is not None and cached:
        scores, classes = reference.scores, reference.classes
    else:
        scores, classes = _output_roles(float_model)
        if reference is not None:
            reference.start(step)
            reference.scores, reference.classes = scores, classes
            reference.outputs = tuple(outputs)
    classes = tuple(c for c in classes if c in float_outputs)
    tally = Tally(class_outputs=classes)
    for k, (feeds, labels) in enumerate(evalset.batches(step)):
        n = next(iter(feeds.values())).shape[0]
        if fixed is not None and n < fixed:
            feeds = {key: _pad(v, fixed) for key, v in feeds.items()}
        if reference is not None and cached:
            a = reference.batches[k]
        else:
            assert ref is not None  # created whenever the cache is not used
            a = _outputs(ref, outputs, feeds, n)
            if reference is not None:
                reference.keep(a)
        b = merged[k] if merged is not None else _outputs(quant, outputs, feeds, n)
        if scores is not None:
            if labels is not None:
                _check_label_range(labels, a[scores].shape[1])
            tally.add_scores(a[scores], b[scores], labels)
        for name in float_outputs:
            tally.add_output(name, a[name], b[name])
        for name in classes:
            tally.add_classes(a[name], b[name])
        tally.samples += n
        if progress is not None:
            progress(tally.samples / evalset.samples)
    if reference is not None and not cached:
        reference.complete = not reference.overflow
    return tally.report()


def keep_reference(
    reference: ReferenceCache, sess: ort.InferenceSession,
    roles: tuple[str | None, tuple[str, ...]], evalset: EvalSet | SyntheticSet, batch_size: int,
    *, first: list[np.ndarray] | None = None,
) -> None:  # fmt: skip
    """Fill ``reference`` with the outputs of the float model's session ``sess`` (``roles``:
    ``output_roles`` of its graph) over ``evalset``, as ``evaluate`` fills it. ``first``:
    ``sess``'s outputs, all of them, on the set's first batch as it comes (not run again
    unless that batch must be padded)."""
    fixed = evalset.fixed_batch
    step = fixed if fixed is not None else batch_size
    outputs = [o.name for o in sess.get_outputs()]
    reference.start(step)
    reference.scores, reference.classes = roles
    reference.outputs = tuple(outputs)
    for index, (feeds, _) in enumerate(evalset.batches(step)):
        n = next(iter(feeds.values())).shape[0]
        if fixed is not None and n < fixed:
            feeds = {key: _pad(v, fixed) for key, v in feeds.items()}
        elif index == 0 and first is not None:
            reference.keep({o: v[:n] for o, v in zip(outputs, first, strict=True)})
            continue
        reference.keep(_outputs(sess, outputs, feeds, n))
    reference.complete = not reference.overflow


def _outputs(
    sess: ort.InferenceSession, outputs: list[str], feeds: dict[str, np.ndarray], n: int
) -> dict[str, np.ndarray]:
    """The outputs of one batch, without the rows that padded it to ``n``."""
    return {o: v[:n] for o, v in zip(outputs, _run(sess, outputs, feeds), strict=True)}


def _merged_run(
    sess: ort.InferenceSession, outputs: list[str], evalset: EvalSet | SyntheticSet
) -> list[dict[str, np.ndarray]] | None:
    """Each batch's outputs of a synthetic set from one run of ``sess`` on all its batches
    stacked, or None where that does not apply (each batch is then run on its own).

    An unoptimised session decodes every weight at each run, most of a run's time on a
    17M-parameter model (minilm-l3 at 4 bits: 0.05-0.09 s for each batch of 4, 0.06-0.07 s
    for the 12 stacked). Applies where every input is stacked along its batch axis (a free
    one: no input fixes its size) and every output comes back with the batches' rows along
    its first axis (else the batches are run one by one after this run); each batch's rows
    are what its own run gives, bit for bit on the catalog's models with a free batch (rows
    are computed independently)."""
    if not (isinstance(evalset, SyntheticSet) and evalset.free_batch and evalset.count > 1
            and all(i.batched for i in evalset.inputs)):  # fmt: skip
        return None
    batches = [feeds for feeds, _ in evalset.batches(evalset.batch)]
    stacked = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    try:
        values = sess.run(outputs, stacked)
    except Exception:  # onnxruntime's own errors: the batches, run one by one, say what fails
        return None
    rows = evalset.batch
    if any(v.ndim == 0 or v.shape[0] != rows * len(batches) for v in values):
        return None
    return [{o: v[k * rows : (k + 1) * rows] for o, v in zip(outputs, values, strict=True)}
            for k in range(len(batches))]  # fmt: skip


def _run(sess: ort.InferenceSession, outputs: list[str], feeds: dict[str, np.ndarray]) -> list:
    try:
        return sess.run(outputs, feeds)
    except ort.capi.onnxruntime_pybind11_state.InvalidArgument as exc:
        raise InvalidDatasetError(f"the model rejected a batch of the dataset: {exc}") from None


def _pad(block: np.ndarray, size: int) -> np.ndarray:
    """Repeat the last row so that ``block`` has ``size`` rows."""
    reps = np.repeat(block[-1:], size - block.shape[0], axis=0)
    return np.concatenate([block, reps], axis=0)


def _check_label_range(labels: np.ndarray, classes: int) -> None:
    high = int(labels.max()) if labels.size else 0
    if high >= classes:
        raise InvalidDatasetError(
            f"labels: {high} is out of range for a model with {classes} classes "
            f"(labels must be in [0, {classes - 1}])"
        )
