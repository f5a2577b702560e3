"""The SVG primitives of report.html: 1-2-5 ticks, escaping, non-finite values."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from quantcore.report import svg as sp

SVG = "{http://www.w3.org/2000/svg}"


def _mantissa(step: float) -> float | None:
    """1, 2 or 5 if ``step`` is that times a power of ten (to rounding), else None."""
    for m in (1.0, 2.0, 5.0):
        e = math.log10(step / m)
        if abs(e - round(e)) < 1e-6:
            return m
    return None


def _check_nice(ticks: list[float], lo: float, hi: float) -> float:
    """The step of ``ticks``, after checking that they are evenly spaced multiples of a
    1-2-5 step and cover ``lo..hi``."""
    assert len(ticks) >= 2
    step = ticks[1] - ticks[0]
    assert step > 0 and _mantissa(step) is not None
    assert np.allclose(np.diff(ticks), step, rtol=1e-6, atol=0)
    assert np.allclose(np.asarray(ticks) / step, np.round(np.asarray(ticks) / step), atol=1e-6)
    slack = 1e-6 * step
    assert ticks[0] <= lo + slack and ticks[-1] >= hi - slack
    return step


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (-0.31, 0.29, [-0.4, -0.2, 0.0, 0.2, 0.4]),
        (0.3, 0.7, [0.3, 0.4, 0.5, 0.6, 0.7]),  # 0.3 / 0.1 is just under 3: no tick below
        (92.1, 98.1, [92.0, 94.0, 96.0, 98.0, 100.0]),
        (1.5, 5.0, [1.0, 2.0, 3.0, 4.0, 5.0]),
        (0.0, 233931 / 1024, [0.0, 50.0, 100.0, 150.0, 200.0, 250.0]),
        (2.5, 2.5, [2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8]),  # widened by 10%: 2.25 .. 2.75
        (0.0, 0.0, [-1.0, -0.5, 0.0, 0.5, 1.0]),
    ],
)
def test_nice_ticks_examples(lo, hi, expected):
    ticks = sp.nice_ticks(lo, hi, max_ticks=7 if lo == hi == 2.5 else 6)
    assert ticks == pytest.approx(expected)
    _check_nice(ticks, lo, hi)


@given(
    lo=st.floats(-1e6, 1e6, allow_nan=False),
    span=st.floats(1e-6, 1e6, allow_nan=False),
    max_ticks=st.integers(4, 10),
)
def test_nice_ticks_cover_the_range_with_a_1_2_5_step(lo, span, max_ticks):
    assume(span >= 1e-6 * abs(lo))  # a range resolved by float64, with digits to spare
    hi = lo + span
    ticks = sp.nice_ticks(lo, hi, max_ticks)
    step = _check_nice(ticks, lo, hi)
    assert len(ticks) <= max_ticks
    # The smallest such step: the next smaller 1-2-5 step needs more than max_ticks ticks.
    smaller = step / (2.5 if _mantissa(step) == 5.0 else 2.0)
    needed = math.ceil(hi / smaller - 1e-9) - math.floor(lo / smaller + 1e-9) + 1
    assert needed > max_ticks


@given(
    hi=st.floats(1e-6, 1e6, allow_nan=False),
    count=st.integers(3, 8),
)
def test_second_axis_ticks_have_the_first_axis_count(hi, count):
    ticks = sp.nice_ticks_n(0.0, hi, count)
    assert len(ticks) == count and ticks[0] == 0.0
    _check_nice(ticks, 0.0, hi)


def test_tick_labels_share_one_format_and_use_a_minus_sign():
    assert sp.tick_labels([-0.4, -0.2, 0.0, 0.2, 0.4]) == ["−0.4", "−0.2", "0", "0.2", "0.4"]
    assert sp.tick_labels([0.0, 0.05, 0.1]) == ["0", "0.05", "0.10"]
    assert sp.tick_labels([0.0, 50.0, 100.0]) == ["0", "50", "100"]
    assert sp.tick_labels([0.0, 2e-5, 4e-5]) == ["0", "2e−05", "4e−05"]


def test_nice_ticks_refuse_non_finite_ranges():
    with pytest.raises(ValueError, match="finite"):
        sp.nice_ticks(0.0, math.inf)
    assert sp.finite_range([math.nan, -math.inf, 2.0, 3.0], [math.inf]) == (2.0, 3.0)
    assert sp.finite_range([math.nan]) == (0.0, 1.0)


def _frame() -> sp.Frame:
    return sp.Frame.fit(sp.Box(left=50, top=20, width=400, height=200), x=(0, 4), y=(0, 3))


def test_a_polyline_breaks_at_non_finite_values():
    frame = _frame()
    path = sp.polyline(frame, [0, 1, 2, 3, 4, 5], [1, 2, math.nan, 2, 3, math.inf], color="#000")
    d = ET.fromstring(path).get("d")
    assert d is not None and "nan" not in d.lower() and "inf" not in d.lower()
    runs = re.findall(r"M[^M]+", d)
    assert len(runs) == 2 and all(r.count("L") == 1 for r in runs)  # (0, 1) and (3, 4)
    # A lone finite point between gaps draws no line; no finite point draws nothing at all.
    assert sp.polyline(frame, [0, 1, 2], [math.nan, 1, math.nan], color="#000") == ""
    assert sp.markers(frame, [0, 1], [math.nan, math.inf], color="#000") == ""
    one = ET.fromstring(sp.markers(frame, [0, 1], [math.nan, 2], color="#000")).get("d", "")
    assert one.count("a") == 2  # one circle: two arcs


def test_data_maps_inside_the_frame_and_y_grows_upwards():
    frame = _frame()
    x = frame.x.px([0, 4])
    y = frame.y.px([0, 3])
    assert x.tolist() == [50, 450] and y.tolist() == [220, 20]
    padded = sp.Frame.fit(frame.box, x=(0, 4), y=(0, 3), pad=10)
    assert padded.x.px([0, 4]).tolist() == [60, 440]
    assert padded.y.px([0, 3]).tolist() == [210, 30]


def test_a_tight_axis_ends_at_the_data_with_ticks_inside():
    scale = sp.Scale.fit(-0.45, 0.42, 0, 100, max_ticks=7, tight=True)
    assert (scale.lo, scale.hi) == (-0.45, 0.42)
    assert scale.ticks[0] >= -0.45 and scale.ticks[-1] <= 0.42 and len(scale.ticks) >= 3


def test_escaping_keeps_markup_and_xml_invalid_characters_out():
    name = "<script>alert(1)</script>\x01 & \"q\" 'a'"
    key = sp.Key(label=name, color="#000", line=True)
    legend = sp.legend([key], sp.Box(left=0, top=0, width=100, height=20))
    doc = sp.document(100, 50, name, sp.text(10, 10, name), sp.group(name, ""), legend)
    assert "<script" not in doc and "\x01" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    root = ET.fromstring(doc)
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == "<script>alert(1)</script> & \"q\" 'a'"
