"""Bounds on a job's work and on what an input file may hold, from the service's settings (or
the CLI's defaults).

``InputLimits`` bounds caller files before memory is taken for them: every size a file
declares (an ``.npy`` header's shape, an ``.npz`` member's zip header, a safetensors header's
shapes and offsets, an ONNX tensor's dims and external data) is checked against these numbers
and against the file itself before anything is allocated. A size over a limit raises
``InputTooLargeError`` (``payload_too_large``); a file whose sizes do not add up raises the
reader's ``InvalidModelError`` / ``InvalidDatasetError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class InputLimits:
    # One tensor or array: its shape times its item size, as declared.
    max_array_bytes: int = 4 * GIB
    # All the arrays of one .npz together, inflated: the sizes its zip headers declare, and the
    # bytes counted while inflating.
    max_inflated_bytes: int = 8 * GIB
    # Inflated over stored bytes of an .npz, once it inflates past INFLATION_RATIO_FLOOR:
    # numbers compress a few times at most; a zip bomb a thousand times.
    max_inflation_ratio: float = 100.0
    # Members of one .npz (each a ZipInfo in memory before any is read).
    max_npz_members: int = 10_000
    # A safetensors file's JSON header.
    max_header_bytes: int = 16 * MIB
    # Nesting of JSON a caller sends: a safetensors header (and, in the service, a body or a
    # spec).
    max_json_depth: int = 32


# Below this many inflated bytes the ratio is not checked (a small set of zeros compresses
# well and costs nothing).
INFLATION_RATIO_FLOOR = 64 * MIB

# What a reader applies when its caller passes no limits: every file is still checked for
# sizes that do not add up, but no size is too large.
UNLIMITED = InputLimits(
    max_array_bytes=1 << 62,
    max_inflated_bytes=1 << 62,
    max_inflation_ratio=float("inf"),
    max_npz_members=1 << 62,
    max_header_bytes=1 << 62,
    max_json_depth=512,  # deeper than this, parsing JSON would exhaust the stack
)


def describe_bytes(n: int) -> str:
    """``n`` bytes for a person: "4294967296 bytes (4 GiB)"."""
    if n < 1024:
        return f"{n} bytes"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = min(len(units), (n.bit_length() - 1) // 10)
    return f"{n} bytes ({n / 1024**power:.4g} {units[power - 1]})"


@dataclass(frozen=True, kw_only=True)
class JobLimits:
    max_sweep_points: int = 64
    eval_batch_size: int = 256
    inputs: InputLimits = field(default_factory=InputLimits)
    # The fidelity check of a quantize job (report["fidelity"]): an output SQNR under
    # fidelity_min_sqnr_db puts a warning in the report; the check (inputs synthesised when no
    # dataset is given, and the per-layer measurements behind the warning) stops adding
    # measurements once fidelity_budget_s has passed.
    fidelity_min_sqnr_db: float = 20.0
    fidelity_budget_s: float = 60.0
    # Without an evaluation set, the check runs both models on synthetic inputs: onnxruntime's
    # sessions and runs cost about as much as the quantization itself and grow with the
    # model, so a model of more parameters than this gets the check skipped, and its report
    # says so (fidelity.reason and a warning). With a set, the evaluation's numbers are used.
    fidelity_max_params: int = 100_000_000
    # Calibration ("bias", "gptq"): samples of the set run to capture layer inputs, and the
    # widest reduction axis whose K x K Hessian is kept (wider layers are rounded plainly).
    calibration_samples: int = 128
    calibration_max_k: int = 4096
