"""Evaluation sets checked against real ONNX models: every mismatch is a clear error."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantcore.errors import InvalidDatasetError, InvalidModelError
from quantcore.evaluate import check_dataset, inspect_dataset
from tests import bad_files as bf
from tests.models import mlp


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return mlp((16, 32, 10))  # x: (N, 16) float32 -> y: (N, 10)


def _npz(tmp_path: Path, name: str = "set.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _x(n: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)


def test_a_fitting_set_is_accepted_with_its_sample_count(tmp_path, model):
    labels = np.arange(20) % 10
    evalset = check_dataset(model, _npz(tmp_path, x=_x(), labels=labels))
    assert evalset.samples == 20
    assert evalset.classes == 10
    assert evalset.labels is not None
    assert [i.name for i in evalset.inputs] == ["x"]


def test_one_input_accepts_one_array_of_any_name_and_float64_is_cast(tmp_path, model):
    evalset = check_dataset(model, _npz(tmp_path, images=_x().astype(np.float64)))
    (feeds, labels), *_ = list(evalset.batches(64))
    assert feeds["x"].dtype == np.float32
    assert labels is None
    np.testing.assert_array_equal(feeds["x"], _x())


def test_batches_stream_rows_in_order_across_inputs_and_labels(tmp_path, model):
    x, labels = _x(23), np.arange(23) % 10
    evalset = check_dataset(model, _npz(tmp_path, x=x, labels=labels))
    blocks = list(evalset.batches(5))
    assert [b[0]["x"].shape[0] for b in blocks] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([b[0]["x"] for b in blocks]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), labels)


def test_compressed_and_fortran_ordered_arrays_read_the_same(tmp_path, model):
    x = _x(11)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, x=np.asfortranarray(x))
    blocks = list(check_dataset(model, path).batches(4))
    np.testing.assert_array_equal(np.concatenate([b[0]["x"] for b in blocks]), x)


def test_inspect_dataset_lists_arrays_and_shapes(tmp_path):
    info = inspect_dataset(_npz(tmp_path, x=_x(7), labels=np.zeros(7, np.int64)))
    assert info.arrays == {"x": (7, 16), "labels": (7,)}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": _x(), "y": _x()}, "unexpected array(s) 'y'"),
        ({"x": np.zeros((20, 16), np.int32)}, "dtype int32 does not fit the model's float32"),
        ({"x": np.zeros((20, 4, 4), np.float32)}, "rank 3"),
        ({"x": np.zeros((20, 15), np.float32)}, "dimension 1 is 15 but the model fixes it to 16"),
        ({"x": _x(0)}, "the dataset is empty"),
        ({"x": _x(), "labels": np.zeros(20, np.float32)}, "labels: dtype float32 is not an int"),
        ({"x": _x(), "labels": np.zeros(19, np.int64)}, "19 labels for 20 samples"),
        ({"x": _x(), "labels": np.zeros((20, 1), np.int64)}, "must be one class index"),
        ({"x": _x(), "labels": np.full(20, 10)}, "labels: 10 is out of range for a model with 10"),
        ({"x": _x(), "labels": np.full(20, -1)}, "labels: -1 is negative"),
    ],
)
def test_mismatches_name_what_differs(tmp_path, model, arrays, message):
    with pytest.raises(InvalidDatasetError) as err:
        check_dataset(model, _npz(tmp_path, **arrays))
    assert message in err.value.message
    assert err.value.code == "invalid_dataset"


def test_nan_in_the_inputs_is_counted_and_refused(tmp_path, model):
    x = _x(3000)
    x[2500, 3] = np.nan
    x[10, 0] = np.inf
    with pytest.raises(InvalidDatasetError, match=r"input 'x': 2 value\(s\) are NaN or infinite"):
        check_dataset(model, _npz(tmp_path, x=x))


def test_only_labels_means_the_input_is_missing(tmp_path, model):
    with pytest.raises(InvalidDatasetError, match="no array for model input"):
        check_dataset(model, _npz(tmp_path, labels=np.zeros(3, np.int64)))


def test_two_inputs_need_both_arrays_with_equal_sample_counts(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph)
    a = np.zeros((5, 3), np.float32)
    with pytest.raises(InvalidDatasetError, match=r"no array for model input.*'b'"):
        check_dataset(model, _npz(tmp_path, a=a))
    with pytest.raises(
        InvalidDatasetError, match=r"input 'b' .* 4 samples, but other inputs have 5"
    ):
        check_dataset(model, _npz(tmp_path, a=a, b=a[:4]))
    assert check_dataset(model, _npz(tmp_path, a=a, b=a)).samples == 5


def test_not_an_npz_and_object_arrays_are_refused(tmp_path, model):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(InvalidDatasetError, match=r"not an \.npz archive"):
        check_dataset(model, bad)
    with pytest.raises(InvalidDatasetError, match="holds Python objects"):
        inspect_dataset(_npz(tmp_path, x=np.array([{"a": 1}], dtype=object)))
    stray = tmp_path / "stray.npz"
    with zipfile.ZipFile(stray, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(InvalidDatasetError, match=r"'notes\.txt' is not a \.npy array"):
        inspect_dataset(stray)
    with pytest.raises(InvalidDatasetError, match="holds no arrays"):
        with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
            pass
        inspect_dataset(tmp_path / "empty.npz")


def test_a_negative_batch_size_in_the_graph_is_symbolic(tmp_path, model):
    """Some exporters (Paddle2ONNX) write -1 for a free dimension: it fixes nothing."""
    minus = onnx.ModelProto()
    minus.CopyFrom(model)
    minus.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    evalset = check_dataset(minus, _npz(tmp_path, x=_x(20)))
    assert evalset.fixed_batch is None
    assert sum(f["x"].shape[0] for f, _ in evalset.batches(8)) == 20


def _token_model() -> onnx.ModelProto:
    """int32 token ids (N, 6) -> mean of their embeddings (N, 4): magika's kind of input."""
    table = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]),
         helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0)],
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [onnx.numpy_helper.from_array(table, "table")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_integers_of_another_width_are_cast_where_they_fit(tmp_path):
    ids = np.random.default_rng(1).integers(0, 300, size=(9, 6))  # numpy's default: int64
    evalset = check_dataset(_token_model(), _npz(tmp_path, ids=ids))
    (feeds, _), *_ = list(evalset.batches(64))
    assert feeds["ids"].dtype == np.int32
    np.testing.assert_array_equal(feeds["ids"], ids)
    ids[7, 2] = 1 << 40  # would wrap to 0 in int32
    with pytest.raises(InvalidDatasetError, match=r"input 'ids': values \d+ to 1099511627776 "
                       r"\(int64\) do not fit the model's int32"):  # fmt: skip
        check_dataset(_token_model(), _npz(tmp_path, ids=ids))
    with pytest.raises(InvalidDatasetError, match="dtype float64 does not fit the model's int32"):
        check_dataset(_token_model(), _npz(tmp_path, ids=ids.astype(np.float64)))


def test_a_deflate_stream_that_breaks_mid_array_is_an_invalid_dataset(tmp_path):
    # check_dataset (the CLI's path) reads the rows without inflating the archive first.
    model = mlp((16, 8))
    path = tmp_path / "set.npz"
    path.write_bytes(bf.corrupt_deflate_npz(rows=2000, valid_rows=1000))
    with pytest.raises(InvalidDatasetError, match=r"'x\.npy' cannot be inflated: Error -3"):
        check_dataset(model, path)


def test_a_model_given_by_path_is_read_as_its_graph_and_a_broken_one_is_named(tmp_path):
    """``check_dataset`` of a model file reads its graph only (a layer of 128 KiB stays in the
    file) and checks the set against it as against the parsed model; bytes that are not a
    model are refused by name."""
    large = mlp((16, 2048, 10), seed=1)  # fc1: 2048 x 16 float32 = 128 KiB
    path = tmp_path / "m.onnx"
    onnx.save(large, str(path))
    evalset = check_dataset(path, _npz(tmp_path, x=_x()))
    assert evalset.samples == 20
    with pytest.raises(InvalidDatasetError, match="x"):
        check_dataset(path, _npz(tmp_path, "bad.npz", x=_x()[:, :8]))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\xff" * 64)
    with pytest.raises(InvalidModelError, match=r"'broken\.onnx' cannot be read"):
        check_dataset(broken, _npz(tmp_path, x=_x()))
