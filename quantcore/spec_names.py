"""The names a spec chooses among: methods, granularities, supports, roundings, calibrations.

``quantcore.spec`` validates a caller's choice of them and re-exports them.
"""

from __future__ import annotations

from enum import StrEnum


class Method(StrEnum):
    UNIFORM = "uniform"
    DEADZONE = "deadzone"
    MULAW = "mulaw"
    LOG = "log"
    FLOAT = "float"


class Granularity(StrEnum):
    MODEL = "model"
    LAYER = "layer"
    CHANNEL = "channel"
    GROUP = "group"
    AUTO = "auto"


class Support(StrEnum):
    WMAX = "wmax"
    ABS_WMIN = "abs_wmin"
    MAX_ABS = "max_abs"
    HUI = "hui"
    JAYANT = "jayant"
    MSE = "mse"
    PERCENTILE = "percentile"
    VALUE = "value"


class Rounding(StrEnum):
    MIDRISE = "midrise"
    MIDTREAD = "midtread"


class Calibration(StrEnum):
    """Data-aware quantization (``quantcore.jobs.calibrate``): none, bias, GPTQ, flat GPTQ,
    GPTQ on synthetic inputs, or ``auto`` (the default), which the job resolves to one of
    them."""

    AUTO = "auto"
    NONE = "none"
    BIAS = "bias"
    GPTQ = "gptq"
    FLAT = "flat"
    SYNTHETIC = "synthetic"


# The calibrations that round by GPTQ (the others: none, bias), and those that read no
# evaluation set (their inputs are made up from the graph).
GPTQ_CALIBRATIONS = frozenset({Calibration.GPTQ, Calibration.FLAT, Calibration.SYNTHETIC})
DATA_FREE_CALIBRATIONS = frozenset({Calibration.FLAT, Calibration.SYNTHETIC})
