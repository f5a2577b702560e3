"""How a job reports progress: a callback of (stage, fraction of the whole job).

A job is a chain of steps, each given a span ``[lo, hi]`` of the whole; ``span`` and
``stage_span`` map a step's own progress in ``[0, 1]`` onto it, so no step needs to know
where it sits in the job.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class Stage(StrEnum):
    LOADING = "loading"
    QUANTIZING = "quantizing"
    EVALUATING = "evaluating"
    WRITING = "writing"


# Called as progress(stage, fraction) with fraction in [0, 1] over the whole job.
ProgressCallback = Callable[[Stage, float], None]


def span(progress: ProgressCallback | None, lo: float, hi: float) -> ProgressCallback:
    """Map (stage, share of a step) onto ``[lo, hi]`` of the whole job; a share outside
    ``[0, 1]`` is clipped, and with no callback nothing is reported."""

    def report(stage: Stage, fraction: float) -> None:
        if progress is not None:
            progress(stage, lo + (hi - lo) * min(max(fraction, 0.0), 1.0))

    return report


def stage_span(
    progress: ProgressCallback | None, stage: Stage, lo: float, hi: float
) -> Callable[[float], None]:
    """``span`` for a step that stays in one stage."""
    report = span(progress, lo, hi)
    return lambda fraction: report(stage, fraction)
