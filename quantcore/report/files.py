"""A job's ``report.json`` and ``report.html``, written the same way for every job kind.

The page is drawn first: it shows no timings, and the cost of drawing it is counted in
``timings.report_s`` (added to what the job already spent on its figures' data); then
``timings.total_s`` is closed and both files are written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantcore.report.histograms import HistogramPanel
from quantcore.report.html import render_report_html

REPORT_NAME = "report.json"
HTML_NAME = "report.html"


def write_report_files(
    out_dir: Path,
    report: dict[str, Any],
    histograms: Sequence[HistogramPanel],
    *,
    started: float,
) -> tuple[Path, Path]:
    """Write ``report`` (its ``timings`` completed in place) and its page into ``out_dir``;
    ``started`` is the job's ``time.perf_counter()`` at its start."""
    t0 = time.perf_counter()
    page = render_report_html(report, histograms)
    timings = report["timings"]
    timings["report_s"] = timings.get("report_s", 0.0) + time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / REPORT_NAME, out_dir / HTML_NAME
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False))
    html_path.write_text(page, encoding="utf-8")
    return json_path, html_path
