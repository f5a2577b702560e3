"""Bounds on a job's work that come from the service's settings (or the CLI's defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class JobLimits:
    max_sweep_points: int = 64
    eval_batch_size: int = 256
    # The fidelity check of a quantize job (report["fidelity"]): an output SQNR under
    # fidelity_min_sqnr_db puts a warning in the report; the check (inputs synthesised when no
    # dataset is given, and the per-layer measurements behind the warning) stops adding
    # measurements once fidelity_budget_s has passed.
    fidelity_min_sqnr_db: float = 20.0
    fidelity_budget_s: float = 60.0
    # Calibration ("bias", "gptq"): samples of the set run to capture layer inputs, and the
    # widest reduction axis whose K x K Hessian is kept (wider layers are rounded plainly).
    calibration_samples: int = 128
    calibration_max_k: int = 4096
