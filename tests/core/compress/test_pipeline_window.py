"""How many tensors ``quantize_model`` keeps in flight: past ``workers`` only while the ones
behind the oldest unfinished tensor hold fewer parameters than it (``_held_up``), so that a
large tensor at the head does not leave the other workers idle, and what waits behind it
stays smaller than it. Results come out in the model's order either way."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from quantcore.compress import pipeline
from quantcore.formats.load import load_model
from quantcore.formats.weights_io import write_npz
from quantcore.spec import QuantSpec

WAIT_S = 20.0  # far beyond the few milliseconds each small tensor takes


def _model(tmp_path: Path, shapes: list[tuple[int, int]]) -> pipeline.Model:
    rng = np.random.default_rng(5)
    arrays = [(f"layer{i}.weight", rng.laplace(size=shape).astype(np.float32))
              for i, shape in enumerate(shapes)]  # fmt: skip
    path = tmp_path / "weights.npz"
    write_npz(path, arrays)
    return load_model(path)


def _spy_batches(monkeypatch: pytest.MonkeyPatch, hold_first: threading.Event,
                 started: list[int], finished: list[int],
                 release_after: int | None = None) -> None:  # fmt: skip
    """``_quantize_batch`` recording which batches start and finish; batch 0 waits (at most
    ``WAIT_S``) until ``hold_first`` is set, which happens once ``release_after`` batches
    have finished (if given)."""
    real = pipeline._quantize_batch
    lock = threading.Lock()

    def spy(requests, spec, share, seed):  # type: ignore[no-untyped-def]
        with lock:
            started.append(seed)
        if seed == 0:
            hold_first.wait(WAIT_S)
        done = real(requests, spec, share, seed)
        with lock:
            finished.append(seed)
            if len(finished) == release_after:
                hold_first.set()
        return done

    monkeypatch.setattr(pipeline, "_quantize_batch", spy)


def test_small_tensors_go_on_while_a_large_one_is_quantized(tmp_path, monkeypatch):
    shapes = [(512, 512)] + [(16, 32)] * 6
    model = _model(tmp_path, shapes)
    others_done = threading.Event()
    started: list[int] = []
    finished: list[int] = []
    _spy_batches(monkeypatch, others_done, started, finished, release_after=len(shapes) - 1)
    spec = QuantSpec.from_dict({"bits": 4, "granularity": "channel", "calibration": "none"})
    qmodel = pipeline.quantize_model(model, spec, workers=2)
    # Batch 0 is held until the six small ones are done: it finishes last, not at its timeout.
    assert sorted(finished[:-1]) == list(range(1, len(shapes))) and finished[-1] == 0, (
        f"the small tensors waited behind the large one: finished {finished}")
    assert [w.name for w in qmodel.weights] == [f"layer{i}.weight" for i in range(len(shapes))]
    one_at_a_time = pipeline.quantize_model(model, spec, workers=1)
    for got, want in zip(qmodel.weights, one_at_a_time.weights, strict=True):
        assert got.body == want.body


def test_tensors_of_one_size_keep_workers_plus_one_in_flight(tmp_path, monkeypatch):
    shapes = [(64, 64)] * 8
    model = _model(tmp_path, shapes)
    release = threading.Event()
    started: list[int] = []
    finished: list[int] = []
    _spy_batches(monkeypatch, release, started, finished)
    seen_while_held: list[list[int]] = []

    def look() -> None:  # what was submitted while batch 0 is still held
        time.sleep(0.5)
        seen_while_held.append(sorted(started))
        release.set()

    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    spec = QuantSpec.from_dict({"bits": 8, "granularity": "channel", "calibration": "none"})
    qmodel = pipeline.quantize_model(model, spec, workers=2)
    looker.join()
    # Batch 0 and batch 1 on the two workers, batch 2 read ahead: nothing more.
    assert len(seen_while_held) == 1 and 0 in seen_while_held[0]
    assert set(seen_while_held[0]) <= {0, 1, 2}, seen_while_held
    assert sorted(finished) == list(range(len(shapes)))
    assert [w.name for w in qmodel.weights] == [f"layer{i}.weight" for i in range(len(shapes))]
