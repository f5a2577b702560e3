"""What the portal's pages show of a job, read from its record: plain values for templates."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.store.records import JobRecord

ACTIVE = frozenset({"queued", "running"})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt(value: Any, digits: int = 3) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.{digits}g}"


def fmt_pct(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{100 * number:.2f} %"


def fmt_bytes(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(number) < 1024 or unit == "GiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return "—"


def fmt_time(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def method_text(spec: dict[str, Any] | None) -> str:
    """``uniform, 4 bits`` (``float e4m3``): the quantizer a spec chose."""
    if not spec:
        return "—"
    method = spec.get("method", "uniform")
    if method == "float":
        return f"float e{spec.get('exponent_bits')}m{spec.get('mantissa_bits')}"
    return f"{method}, {spec.get('bits')} bits"


def spec_text(job: JobRecord) -> str:
    spec = job.spec or {}
    if job.kind == "quantize":
        return method_text(spec)
    report = job.report or {}
    if job.kind == "search" and report.get("chosen_spec"):
        return f"chose {method_text(report['chosen_spec'])}"
    grid = spec.get("grid") or spec.get("candidates") or {}
    varied = ", ".join(f"{k}: {'/'.join(str(v) for v in vs)}" for k, vs in grid.items())
    return f"{job.kind} over {varied}" if varied else job.kind


@dataclass(frozen=True, kw_only=True)
class Point:
    """One measured configuration: bits per weight against SQNR and top-1."""

    bits_per_weight: float
    sqnr_db: float | None
    top1: float | None
    label: str


@dataclass(frozen=True, kw_only=True)
class JobView:
    job: JobRecord
    model_name: str
    method: str
    ratio: str
    sqnr: str
    top1_drop: str
    original: str
    package: str
    bits_per_weight: str
    top1_float: str
    top1_quantized: str
    agreement: str
    points: list[Point] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.job.status in ACTIVE

    @property
    def title(self) -> str:
        return self.job.name or f"{self.job.kind} {self.job.id[:8]}"


def _points(job: JobRecord) -> list[Point]:
    report = job.report or {}
    rows = report.get("rows") or report.get("path") or []
    points = []
    for row in rows:
        bpw = _number(row.get("entropy_bits_per_weight")) or _number(row.get("bits_per_weight"))
        if bpw is None:
            continue
        accuracy = row.get("accuracy") or {}
        points.append(Point(bits_per_weight=bpw, sqnr_db=_number(row.get("sqnr_db")),
                            top1=_number((accuracy.get("quantized") or {}).get("top1")),
                            label=method_text(row.get("spec"))))
    summary = report.get("summary") or {}
    bpw = (_number(summary.get("entropy_bits_per_weight"))
           or _number(summary.get("bits_per_weight")))
    if not points and bpw is not None:
        accuracy = report.get("accuracy") or {}
        points.append(Point(bits_per_weight=bpw, sqnr_db=_number(summary.get("sqnr_db")),
                            top1=_number((accuracy.get("quantized") or {}).get("top1")),
                            label=method_text(job.spec)))
    return points


def job_view(job: JobRecord, model_name: str = "") -> JobView:
    report = job.report or {}
    summary = job.summary or report.get("summary") or {}
    accuracy = report.get("accuracy") or {}
    artifacts = summary.get("artifacts") or {}
    return JobView(
        job=job, model_name=model_name or job.model_id[:12], method=spec_text(job),
        ratio=fmt(summary.get("compression_ratio")), sqnr=fmt(summary.get("sqnr_db")),
        top1_drop=fmt_pct(accuracy.get("top1_drop")),
        original=fmt_bytes(summary.get("original_bytes")),
        package=fmt_bytes(artifacts.get("model.qpack")),
        bits_per_weight=fmt(summary.get("entropy_bits_per_weight")),
        top1_float=fmt_pct((accuracy.get("fp32") or {}).get("top1")),
        top1_quantized=fmt_pct((accuracy.get("quantized") or {}).get("top1")),
        agreement=fmt_pct(accuracy.get("agreement")), points=_points(job),
    )
