"""report.html: one self-contained page whose figures are inline SVG, well-formed XML."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest

from quantcore import JobInput, JobKind, JobLimits, run_job
from quantcore.report.figures import search_figure, sweep_figures
from quantcore.report.histograms import (
    MAX_STEMS,
    hist_figure,
    merged_histogram,
    weight_histogram,
)
from quantcore.report.html import render_report_html

SVG = "{http://www.w3.org/2000/svg}"
SCRIPT = "<script>alert(1)</script>"


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


def _figures(page: str) -> list[ET.Element]:
    """Every ``<svg>`` of ``page``, parsed as XML (a malformed one fails here)."""
    figures = [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]
    for fig in figures:
        assert fig.tag == f"{SVG}svg"
        title = fig.find(f"{SVG}title")
        assert title is not None and title.text
    return figures


def _groups(element: ET.Element, kind: str) -> list[ET.Element]:
    return element.findall(f".//{SVG}g[@class='{kind}']")


def _panel_series(figure: ET.Element) -> list[int]:
    """How many series each panel of ``figure`` draws, in order."""
    return [len(_groups(panel, "series")) for panel in _groups(figure, "panel")]


def _numbers_are_finite(figure: ET.Element) -> None:
    """No coordinate, path or transform holds "nan" or "inf"."""
    for element in figure.iter():
        for name, value in element.attrib.items():
            if name in ("d", "x", "y", "width", "height", "viewBox", "transform", "r"):
                assert not re.search(r"nan|inf", value, re.I), (element.tag, name, value)


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
    # Nothing to fetch: the one URL is the SVG namespace's name.
    local = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in page and "http://" not in local and "https://" not in local
    assert "&lt;fc1&gt;" in page and "<fc1>" not in page
    (figure,) = _figures(page)
    assert _panel_series(figure) == [2, 2, 2]  # per tensor and pooled: float and quantized
    assert "accuracy" in page.lower() and "fp32.top1" in page


def test_sweep_page_draws_threshold_and_rate_distortion_figures():
    report = {"kind": "sweep", "rows": _sweep_rows()}
    page = render_report_html(report)
    threshold, rate = _figures(page)  # against the threshold, and rate-distortion
    # Two series (2 and 3 bits): SQNR measured and in theory, then top-1, then the same
    # without theory against rate.
    assert _panel_series(threshold) == [4, 2]
    assert _panel_series(rate) == [2, 2]
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
    (figure,) = _figures(page)  # size against drop
    assert _panel_series(figure) == [4]  # budget, within it, over it, the chosen step


@pytest.mark.parametrize(("granularity", "use_matmul", "spec"), [
    ("layer", False, {}), ("channel", False, {}),
    # Blocks along the rows (Gemm's (out, in)) and down them (MatMul's (in, out)), a codebook
    # family's blocks.
    ("group", False, {}), ("group", True, {}), ("group", True, {"method": "mulaw"}),
])  # fmt: skip
def test_row_sampling_of_a_big_tensor_decodes_exactly_those_rows(
    tmp_path, granularity, use_matmul, spec
):
    from quantcore.compress.pipeline import load_model, quantize_model
    from quantcore.report.histograms import HIST_SAMPLE, _sampled_rows, model_histograms
    from quantcore.spec import QuantSpec
    from tests.models import mlp

    path = tmp_path / "big.onnx"
    # fc1.weight: 1000 x 1200 (Gemm) or 1200 x 1000 (MatMul) = 1.2 M weights
    onnx.save(mlp((16, 1200, 1000), use_matmul=use_matmul), path)
    qmodel = quantize_model(
        load_model(path),
        QuantSpec.from_dict({"bits": 3, "granularity": granularity, **spec}),
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
    from quantcore.compress.pipeline import load_model, quantize_model
    from quantcore.report.histograms import MAX_LAYER_PANELS, POOLED_NAME, model_histograms
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
    (figure,) = _figures(page)
    assert len(_groups(figure, "panel")) == MAX_LAYER_PANELS + 1


def test_a_script_tensor_name_reaches_the_page_only_escaped(weights):
    w = weights["fc0.weight"]
    figure = hist_figure([weight_histogram(SCRIPT, w, _midrise(w, 0.3, 3))])
    assert "<script" not in figure and "&lt;script&gt;alert(1)&lt;/script&gt;" in figure
    (root,) = _figures(figure)
    (panel,) = _groups(root, "panel")
    texts = ["".join(t.itertext()) for t in panel.iter(f"{SVG}text")]
    assert SCRIPT in texts  # the panel's title, unescaped by the XML parser


def test_a_quantize_job_escapes_a_script_tensor_name(tmp_path):
    from tests.models import mlp

    model = mlp((16, 32, 10))
    for init in model.graph.initializer:
        if init.name == "fc0.weight":
            init.name = SCRIPT
    for node in model.graph.node:
        node.input[:] = [SCRIPT if i == "fc0.weight" else i for i in node.input]
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 3})
    out = run_job(job, tmp_path / "out", None, JobLimits())
    assert SCRIPT in [layer["name"] for layer in out.report["layers"]]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    (figure,) = _figures(page)
    assert _panel_series(figure) == [2, 2, 2]


def test_non_finite_values_do_not_reach_the_figures():
    rows = _sweep_rows()
    rows[1]["sqnr_db"] = math.nan
    rows[2]["sqnr_theory_db"] = math.inf
    rows[5]["sqnr_db"] = None
    rows[6]["entropy_bits_per_weight"] = -math.inf
    for r in rows[4:]:
        r["accuracy"] = None  # the 3-bit series has no accuracy at all
    figures = _figures(sweep_figures(rows))
    assert len(figures) == 2
    for figure in figures:
        _numbers_are_finite(figure)
    threshold = figures[0]
    sqnr_panel = _groups(threshold, "panel")[0]
    two_bit = _groups(sqnr_panel, "series")[0]  # 2-bit measured: 1.5, (nan), 3.5, 4.5
    (line,) = [p for p in two_bit.iter(f"{SVG}path") if p.get("fill") == "none"]
    assert line.get("d", "").count("M") == 1  # only 3.5 - 4.5 is a run of two points
    # No accuracy anywhere: the panels say so instead of plotting.
    no_acc = [{**r, "accuracy": None} for r in _sweep_rows()]
    page = sweep_figures(no_acc)
    assert page.count("no accuracy: the job had no evaluation set") == 2
    for figure in _figures(page):
        _numbers_are_finite(figure)
    # A search without a budget, with an unmeasured step.
    path = [{**r, "drop": math.nan if i == 0 else 0.01 * i} for i, r in enumerate(rows[:3])]
    (search,) = _figures(search_figure(path, None))
    _numbers_are_finite(search)
    assert _panel_series(search) == [3]  # no budget line


def test_series_beyond_the_palette_stay_distinguishable():
    rows = [
        {
            "point": {"bits": bits},
            "spec": {"method": "uniform", "granularity": "layer"},
            "xmax": t,
            "sqnr_db": 6.0 * bits,
            "sqnr_theory_db": 6.0 * bits,
            "entropy_bits_per_weight": bits - 0.5,
        }
        for bits in range(2, 14)  # 12 series: the last two reuse colours with another marker
        for t in (2.0, 3.0)
    ]
    threshold, rate = _figures(sweep_figures(rows))
    assert _panel_series(threshold) == [24, 12]
    # A marker's look: its colour and its shape (the path commands: arcs, h/v, l).
    looks = {
        (p.get("fill"), "".join(sorted(set(re.findall("[a-zA-Z]", p.get("d", ""))))))
        for s in _groups(_groups(rate, "panel")[0], "series")
        for p in s.iter(f"{SVG}path")
    }
    assert len(looks) == 12


def test_histograms_sample_tensors_stored_off_their_item_size(tmp_path):
    from quantcore.compress.pipeline import load_model, quantize_model
    from quantcore.formats.external import external_info
    from quantcore.report.histograms import HIST_SAMPLE, _sampled_rows, model_histograms
    from quantcore.spec import QuantSpec
    from tests.models import mlp

    spec = QuantSpec.from_dict({"bits": 4})
    panels = []
    offsets = set()
    for pad in range(4):  # each character of the producer's name moves the bytes by one
        model = mlp((16, 1200, 1000), use_matmul=True)
        model.producer_name = "x" * pad
        path = tmp_path / f"m{pad}.onnx"
        onnx.save(model, path)
        qmodel = quantize_model(load_model(path), spec)
        tensor = qmodel.source.sources["fc1.weight"].tensor
        offsets.add(int(external_info(tensor)["offset"]) % 4)
        big = next(w for w in qmodel.weights if w.codes.size > HIST_SAMPLE)
        original, _ = _sampled_rows(qmodel, big)
        step = -(-big.codes.size // HIST_SAMPLE)
        aligned = qmodel.source.array(big.name)  # the aligned copy the quantizer reads
        np.testing.assert_array_equal(original, aligned.reshape(big.codes.shape)[::step].ravel())
        panels.append(model_histograms(qmodel))
    assert offsets == {0, 1, 2, 3}
    for other in panels[1:]:  # the same weights, wherever their bytes lie
        for a, b in zip(panels[0], other, strict=True):
            np.testing.assert_array_equal(a.weights.counts, b.weights.counts)
            np.testing.assert_array_equal(a.level_counts, b.level_counts)
