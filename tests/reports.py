"""Helpers for tests that compare job reports."""

from __future__ import annotations


def without_timings(report: dict) -> dict:
    """The report less what measures time: ``timings`` and the ``seconds`` of its checks."""

    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seconds"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {k: strip(v) for k, v in report.items() if k != "timings"}
