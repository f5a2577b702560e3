"""The capture of the calibrated layers' inputs (``quantcore.evaluate.capture``): its runs,
the next batch's on a thread while this one is summed, give what one batch at a time gives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from quantcore.evaluate import capture as capture_module
from quantcore.evaluate.capture import capture_stats
from quantcore.evaluate.synthetic import synthetic_set
from tests.core.evaluate.test_stages import siblings


def _one_at_a_time(
    sess: Any, names: list[str], batches: Iterator[tuple[dict[str, np.ndarray], Any]],
    step: int, fixed: int | None, max_samples: int,
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """The capture's loop as it was: run a batch, sum it, then the next."""
    samples = 0
    for feeds, _ in batches:
        n = next(iter(feeds.values())).shape[0]
        yield n, sess.run(names, feeds)
        samples += n
        if samples >= max_samples:
            return


def _weights(model: onnx.ModelProto) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {t.name: (t.name, tuple(t.dims)) for t in model.graph.initializer}


@pytest.mark.parametrize("max_samples", [10, 100])  # stops inside the set; runs all of it
def test_the_next_batch_run_during_the_sums_gives_the_same_statistics(
    tmp_path: Path, max_samples: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = siblings()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    inputs = synthetic_set(model).rebatched(4, 6)  # 24 samples in batches of 4
    runs: list[int] = []
    original = capture_module.graph_session

    def counted(*args: Any, **kwargs: Any) -> Any:
        sess = original(*args, **kwargs)

        class Counting:
            def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
                runs.append(len(next(iter(feeds.values()))))
                return sess.run(names, feeds)

        return Counting()

    monkeypatch.setattr(capture_module, "graph_session", counted)
    got = capture_stats(path, _weights(model), inputs, max_samples=max_samples, max_k=64)
    # 10 samples: three batches of 4, no fourth started past the limit; 100: the whole set.
    assert runs == [4] * (3 if max_samples == 10 else 6)
    assert got.samples == sum(runs)
    monkeypatch.setattr(capture_module, "_runs", _one_at_a_time)
    want = capture_stats(path, _weights(model), inputs, max_samples=max_samples, max_k=64)
    assert got.stats.keys() == want.stats.keys() and len(got.stats) == 5
    for name, stats in got.stats.items():
        other = want.stats[name]
        assert stats.count == other.count and stats.seen == other.seen
        assert stats.hessian.tobytes() == other.hessian.tobytes()
        assert stats.total.tobytes() == other.total.tobytes()
        assert stats.half is not None and other.half is not None
        assert stats.half.tobytes() == other.half.tobytes()


def test_a_failing_run_is_raised_from_the_capture(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = siblings()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    original = capture_module.graph_session
    calls: list[int] = []

    def failing_second(*args: Any, **kwargs: Any) -> Any:
        sess = original(*args, **kwargs)

        class Failing:
            def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
                calls.append(1)
                if len(calls) == 2:
                    raise RuntimeError("the second batch failed")
                return sess.run(names, feeds)

        return Failing()

    monkeypatch.setattr(capture_module, "graph_session", failing_second)
    inputs = synthetic_set(model).rebatched(4, 6)
    with pytest.raises(RuntimeError, match="the second batch failed"):
        capture_stats(path, _weights(model), inputs, max_samples=100, max_k=64)
    assert len(calls) == 2  # nothing ran after the failure


def test_layers_reading_one_input_share_sums_equal_to_their_own(tmp_path: Path) -> None:
    """``we``, ``wq`` and ``wk`` read ``a`` (4, 32 and 32 outputs): summed once for the three,
    each gets the statistics it gets captured alone, under its own geometry."""
    model = siblings()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    inputs = synthetic_set(model).rebatched(4, 6)
    weights = _weights(model)
    together = capture_stats(path, weights, inputs, max_samples=100, max_k=64)
    for name in ("we", "wq", "wk"):
        alone = capture_stats(path, {name: weights[name]}, inputs, max_samples=100, max_k=64)
        got, want = together.stats[name], alone.stats[name]
        assert got.geometry == want.geometry and got.geometry.rows == weights[name][1][1]
        assert (got.count, got.seen, got.half_count) == (want.count, want.seen, want.half_count)
        assert got.count > 0
        for field in ("hessian", "total", "half", "half_total"):
            assert getattr(got, field).tobytes() == getattr(want, field).tobytes(), field
    # The three share their sums; ``w1`` and ``w3`` (other inputs) have their own.
    assert together.stats["wq"].hessian is together.stats["wk"].hessian
    assert together.stats["w1"].hessian is not together.stats["wq"].hessian
