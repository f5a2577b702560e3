"""quantcore: post-training weight quantization, its theory and its measurements (pure NumPy).

No web framework, task queue or database is imported here: the service and the CLI call in,
and they use only the names below (``tests/core/test_public_face.py`` lists them).

- Jobs: ``run_job``, ``validate_job``, ``inspect_model``, ``inspect_dataset``,
  ``check_dataset_fits`` and their types (``JobKind``, ``JobInput``, ``JobOutput``,
  ``JobLimits``, ``InputLimits``, ``Stage``, ``ProgressCallback``, ``ModelInfo``,
  ``TensorInfo``, ``DatasetInfo``).
- Checks: ``json_depth``, the nesting of JSON text measured before it is parsed.
- Specs: ``QuantSpec``, ``QuantizerSpec`` and their enums and ranges.
- Errors: ``QuantError`` and its subclasses, each with a ``code``.
- Files: ``MODEL_SUFFIXES`` / ``FORMAT_SUFFIX``, the package's ``unpack``,
  ``unpack_file`` and ``package_format``, and ``external_locations`` (the external data files
  an ONNX model names).
- Kernels: ``warm_kernels``, which compiles (or loads) the compiled kernels that jobs and
  unpacks use, ahead of the first job, and ``warm_up_job``, which loads a process's job path
  with one small job (``quantcore.jobs.warm``).
- Processes: ``keep_freed_memory`` and ``release_freed_memory``, the C allocator's settings
  for a process that runs jobs (``quantcore.allocator``), and ``idle_blas_threads``, its
  BLAS threads' (``quantcore.blas_threads``).

Names are loaded on first use, so ``import quantcore`` stays cheap: a caller that only
validates a spec never imports onnx, onnxruntime or SciPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("run_job", "validate_job", "inspect_model", "inspect_dataset", "check_dataset_fits"),
        "quantcore.jobs.run",
    ),
    **dict.fromkeys(
        ("JobKind", "JobInput", "JobOutput", "ModelInfo", "TensorInfo"), "quantcore.jobs.base"
    ),
    "DatasetInfo": "quantcore.evaluate.dataset",
    **dict.fromkeys(("JobLimits", "InputLimits"), "quantcore.limits"),
    "json_depth": "quantcore.checks",
    **dict.fromkeys(("keep_freed_memory", "release_freed_memory"), "quantcore.allocator"),
    "idle_blas_threads": "quantcore.blas_threads",
    **dict.fromkeys(("warm_kernels", "warm_up_job"), "quantcore.jobs.warm"),
    **dict.fromkeys(("Stage", "ProgressCallback"), "quantcore.progress"),
    **dict.fromkeys(
        (
            "QuantSpec", "QuantizerSpec", "Method", "Granularity", "Support", "Rounding",
            "RANGES", "DEFAULT_SUPPORT", "FieldRange",
        ),
        "quantcore.spec",
    ),
    **dict.fromkeys(
        (
            "QuantError", "InvalidSpecError", "InvalidTensorError", "InvalidModelError",
            "UnsupportedModelError", "UnsafeExternalDataError", "NoWeightsError",
            "InvalidDatasetError", "InvalidPackageError", "InputTooLargeError",
        ),
        "quantcore.errors",
    ),
    **dict.fromkeys(("MODEL_SUFFIXES", "FORMAT_SUFFIX"), "quantcore.formats.model"),
    "external_locations": "quantcore.formats.onnx_reader",
    **dict.fromkeys(("unpack", "unpack_file", "package_format"), "quantcore.formats.qpack"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'quantcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from quantcore.allocator import keep_freed_memory, release_freed_memory
    from quantcore.blas_threads import idle_blas_threads
    from quantcore.checks import json_depth
    from quantcore.errors import (
        InputTooLargeError,
        InvalidDatasetError,
        InvalidModelError,
        InvalidPackageError,
        InvalidSpecError,
        InvalidTensorError,
        NoWeightsError,
        QuantError,
        UnsafeExternalDataError,
        UnsupportedModelError,
    )
    from quantcore.evaluate.dataset import DatasetInfo
    from quantcore.formats.model import FORMAT_SUFFIX, MODEL_SUFFIXES
    from quantcore.formats.onnx_reader import external_locations
    from quantcore.formats.qpack import package_format, unpack, unpack_file
    from quantcore.jobs.base import JobInput, JobKind, JobOutput, ModelInfo, TensorInfo
    from quantcore.jobs.run import (
        check_dataset_fits,
        inspect_dataset,
        inspect_model,
        run_job,
        validate_job,
    )
    from quantcore.jobs.warm import warm_kernels, warm_up_job
    from quantcore.limits import InputLimits, JobLimits
    from quantcore.progress import ProgressCallback, Stage
    from quantcore.spec import (
        DEFAULT_SUPPORT,
        RANGES,
        FieldRange,
        Granularity,
        Method,
        QuantizerSpec,
        QuantSpec,
        Rounding,
        Support,
    )
