"""report.html: one self-contained page whose figures are real PNGs."""

from __future__ import annotations

import base64
import re

import numpy as np
import onnx
import pytest

from quantcore.report_figures import MAX_STEMS, merged_histogram, weight_histogram
from quantcore.report_html import render_report_html


def _midrise(w: np.ndarray, xmax: float, bits: int) -> np.ndarray:
    n = 2**bits
    step = 2 * xmax / n
    return ((np.clip(np.floor(w / step), -n / 2, n / 2 - 1) + 0.5) * step).astype(np.float32)


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"fc0.weight": rng.laplace(0, 0.1, (64, 32)), "<fc1>": rng.laplace(0, 0.05, (32, 10))}


def _sweep_rows() -> list[dict]:
    rows = []
    for bits in (2, 3):
        for t in (1.5, 2.5, 3.5, 4.5):
            rows.append(
                {
                    "point": {"bits": bits, "support": "value", "support_value": t},
                    "spec": {"bits": bits, "granularity": "model", "method": "uniform"},
                    "xmax": t,
                    "bits_per_weight": float(bits),
                    "entropy_bits_per_weight": bits - 0.3 + 0.05 * t,
                    "sqnr_db": 6.0 * bits - abs(t - 2.5),
                    "sqnr_theory_db": 6.0 * bits - 1.0 - abs(t - 2.9),
                    "package_bytes": 1000 * bits,
                    "accuracy": {
                        "samples": 10,
                        "fp32": {"top1": 0.98, "top5": 1.0},
                        "quantized": {"top1": 0.97 - 0.01 * (3 - bits) * t, "top5": 1.0},
                        "top1_drop": 0.01 + 0.01 * (3 - bits) * t,
                        "agreement": 0.99,
                        "output_sqnr_db": 20.0,
                    },
                }
            )
    return rows


def _images(page: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ]


def test_histogram_counts_every_weight_on_its_level(weights):
    w = weights["fc0.weight"]
    h = weight_histogram("fc0", w, _midrise(w, 0.3, 3))
    assert h.weights.counts.sum() == w.size
    assert h.level_counts.sum() == w.size
    assert h.levels.size == 8  # 3 bits: every one of the 8 levels is used on this tensor
    # Many distinct values (per-channel scales) fall back to a histogram on the same bins.
    noisy = weight_histogram("x", w, w * 1.01)
    assert noisy.levels.size == noisy.weights.counts.size > MAX_STEMS
    assert noisy.level_counts.sum() == w.size


def test_a_constant_tensor_still_gets_a_histogram():
    h = weight_histogram("c", np.full(5, 0.25), np.full(5, 0.25))
    assert h.weights.counts.sum() == 5 and h.levels.tolist() == [0.25]


def test_quantize_page_is_self_contained_with_escaped_names(weights):
    hists = [weight_histogram(k, w, _midrise(w, 3 * w.std(), 2)) for k, w in weights.items()]
    hists.append(
        merged_histogram("all layers", [(w, _midrise(w, 3 * w.std(), 2)) for w in weights.values()])
    )
    report = {
        "model": {"format": "onnx", "n_params": 2368},
        "summary": {"sqnr_db": 7.1, "bits_per_weight": 2.0, "compression_ratio": float("inf")},
        "layers": [{"name": "<fc1>", "sqnr_db": 7.0, "sqnr_theory_db": None}],
        "accuracy": {"samples": 3, "fp32": {"top1": 1.0, "top5": 1.0}, "agreement": 1.0},
        "spec": {"bits": 2, "overrides": []},
    }
    page = render_report_html(report, hists)
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "&lt;fc1&gt;" in page and "<fc1>" not in page
    images = _images(page)
    assert len(images) == 1 and images[0].startswith(b"\x89PNG\r\n\x1a\n")
    assert "accuracy" in page.lower() and "fp32.top1" in page


def test_sweep_page_draws_threshold_and_rate_distortion_figures():
    report = {"kind": "sweep", "rows": _sweep_rows()}
    page = render_report_html(report)
    images = _images(page)
    assert len(images) == 2  # against the threshold, and rate-distortion
    assert all(i.startswith(b"\x89PNG") and len(i) > 10_000 for i in images)
    assert page.count("<tr>") >= 1 + len(report["rows"])


def test_search_page_highlights_the_chosen_step():
    rows = _sweep_rows()
    path = [{**r, "action": f"try {i}", "within_budget": i < 3} for i, r in enumerate(rows[:4])]
    path[2]["chosen"] = True
    page = render_report_html(
        {"kind": "search", "path": path, "criterion": "top1", "max_top1_drop": 0.01}
    )
    assert page.count("class=chosen") == 1
    assert "Chosen: step 2" in page
    assert len(_images(page)) == 1  # size against drop


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_row_sampling_of_a_big_tensor_decodes_exactly_those_rows(tmp_path, granularity):
    from quantcore.pipeline import load_model, quantize_model
    from quantcore.report_figures import HIST_SAMPLE, _sampled_rows, model_histograms
    from quantcore.spec import QuantSpec
    from tests.models import mlp

    path = tmp_path / "big.onnx"
    onnx.save(mlp((16, 1200, 1000)), path)  # fc1.weight: 1000 x 1200 = 1.2 M weights
    qmodel = quantize_model(
        load_model(path), QuantSpec.from_dict({"bits": 3, "granularity": granularity})
    )
    big = next(w for w in qmodel.weights if w.codes.size > HIST_SAMPLE)
    original, quantized = _sampled_rows(qmodel, big)
    assert original.size == quantized.size <= HIST_SAMPLE
    full = big.dequantized()
    step = -(-big.codes.size // HIST_SAMPLE)  # every 2nd row here
    np.testing.assert_array_equal(quantized, full[::step].reshape(-1))
    panels = model_histograms(qmodel)
    assert [p.name for p in panels] == [w.name for w in qmodel.weights] + ["all quantized weights"]


def test_only_the_largest_tensors_get_panels_and_the_page_says_which(tmp_path):
    from quantcore.pipeline import load_model, quantize_model
    from quantcore.report_figures import MAX_LAYER_PANELS, POOLED_NAME, model_histograms
    from quantcore.spec import QuantSpec
    from tests.models import mlp

    path = tmp_path / "deep.onnx"
    onnx.save(mlp(tuple(range(4, 20))), path)  # 15 layers, each larger than the one before
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict({"bits": 3}))
    panels = model_histograms(qmodel)
    names = [w.name for w in qmodel.weights]
    assert len(names) == 15 > MAX_LAYER_PANELS == 12
    assert [p.name for p in panels] == [*names[3:], POOLED_NAME]
    pooled = panels[-1]
    assert pooled.weights.counts.sum() == sum(w.codes.size for w in qmodel.weights)
    page = render_report_html({"layers": [w.layer for w in qmodel.weights]}, panels)
    assert "Only the 12 largest of the 15 quantized tensors" in page
    assert f"Panels: {', '.join(names[3:])}, {POOLED_NAME}." in page
    assert len(_images(page)) == 1
