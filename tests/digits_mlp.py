"""Seed 001's MLP on scikit-learn's digits: trained once, converted with skl2onnx, cached.

Two hidden layers of 512 ReLU units and a softmax output, as in 001 (there on MNIST; here on
the 8x8 digits bundled with scikit-learn, so nothing is downloaded). The images are scaled to
[0, 1]; the split is seeded and stratified, half for training and half (899 images) for the
evaluation set, so that one test image is 0.11% of accuracy.

``digits_mlp(cache_dir)`` returns the model and the evaluation set as files. The first call
trains (a few seconds) and writes them under ``cache_dir``; later calls, in this session or
the next, read them back. The cache key covers the settings and the scikit-learn version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SETTINGS = {
    "hidden_layer_sizes": [512, 512],
    "activation": "relu",
    "max_iter": 300,
    "random_state": 0,
    "test_size": 0.5,
    "split_seed": 0,
}


@dataclass(frozen=True, kw_only=True)
class DigitsMLP:
    model_path: Path  # model.onnx: input "X" float32 (N, 64); outputs "label", "probabilities"
    dataset_path: Path  # eval.npz: "X" float32 (899, 64) and "labels" int64
    fp32_top1: float  # scikit-learn's own accuracy on the evaluation set


def _key() -> str:
    versions = {pkg: metadata.version(pkg) for pkg in ("scikit-learn", "skl2onnx")}
    text = json.dumps({**SETTINGS, **versions})
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_dir(request: Any, tmp_path_factory: Any) -> Path:
    """pytest's cache folder (kept between sessions), or a session folder without the cache
    plugin (``-p no:cacheprovider``)."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("digits_mlp"))
    return Path(tmp_path_factory.getbasetemp()) / "digits_mlp"


def digits_mlp(cache_dir: Path) -> DigitsMLP:
    folder = Path(cache_dir) / f"digits_mlp_{_key()}"
    model_path, dataset_path, meta_path = (
        folder / "model.onnx",
        folder / "eval.npz",
        folder / "meta.json",
    )
    if not meta_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        top1 = _train(model_path, dataset_path)
        meta_path.write_text(json.dumps({"fp32_top1": top1}))
    meta = json.loads(meta_path.read_text())
    return DigitsMLP(model_path=model_path, dataset_path=dataset_path, fp32_top1=meta["fp32_top1"])


def _train(model_path: Path, dataset_path: Path) -> float:
    import onnx
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x,
        digits.target,
        test_size=SETTINGS["test_size"],
        random_state=SETTINGS["split_seed"],
        stratify=digits.target,
    )
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(SETTINGS["hidden_layer_sizes"]),
        activation=SETTINGS["activation"],
        max_iter=SETTINGS["max_iter"],
        random_state=SETTINGS["random_state"],
    )
    clf.fit(x_train, y_train)
    model = to_onnx(clf, x_train[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    tmp_model, tmp_data = model_path.with_suffix(".tmp"), dataset_path.with_suffix(".tmp.npz")
    onnx.save(model, tmp_model)
    np.savez(tmp_data, X=x_test, labels=y_test.astype(np.int64))
    tmp_model.replace(model_path)
    tmp_data.replace(dataset_path)
    return float(clf.score(x_test, y_test))
