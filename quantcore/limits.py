"""Bounds on a job's work that come from the service's settings (or the CLI's defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class JobLimits:
    max_sweep_points: int = 64
    eval_batch_size: int = 256
