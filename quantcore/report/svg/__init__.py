"""Plot primitives that write SVG text straight from NumPy arrays: axes with 1-2-5 ticks,
polylines, markers, stems, filled step histograms, vertical rules, notes and legends.

A ``Frame`` is one panel's plot area with its scales: it maps data to pixels (SVG's y grows
downwards). Each primitive returns a piece of SVG; ``document`` wraps the pieces of a figure.
``frame`` holds what places things (text, ticks, scales, axes), ``marks`` what is drawn.

Every text and attribute value goes through ``esc`` (tensor names come from user uploads).
Non-finite values never reach the output: a polyline breaks at them, a marker or stem is
left out, and a range is taken over the finite values only.
"""

from quantcore.report.svg.frame import (
    GRID,
    INK,
    Box,
    Frame,
    Scale,
    axes,
    esc,
    finite_range,
    fit_text,
    nice_ticks,
    nice_ticks_n,
    style,
    text,
    text_width,
    tick_labels,
)
from quantcore.report.svg.marks import (
    Key,
    Series,
    document,
    group,
    has_points,
    legend,
    legend_size,
    markers,
    note,
    plot,
    polyline,
    stairs,
    stems,
    vline,
)

__all__ = [
    "GRID", "INK", "Box", "Frame", "Key", "Scale", "Series", "axes", "document", "esc",
    "finite_range", "fit_text", "group", "has_points", "legend", "legend_size", "markers",
    "nice_ticks", "nice_ticks_n", "note", "plot", "polyline", "stairs", "stems", "style",
    "text", "text_width", "tick_labels", "vline",
]  # fmt: skip
