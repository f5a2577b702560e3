"""What the service and the CLI may use of the core: exactly these names, loaded lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import quantcore

EXPORTED = [
    "DEFAULT_SUPPORT", "DatasetInfo", "FORMAT_SUFFIX", "FieldRange", "Granularity",
    "InputLimits", "InputTooLargeError", "InvalidDatasetError", "InvalidModelError",
    "InvalidPackageError", "InvalidSpecError", "InvalidTensorError", "JobInput", "JobKind",
    "JobLimits", "JobOutput", "MODEL_SUFFIXES", "Method", "ModelInfo", "NoWeightsError",
    "ProgressCallback", "QuantError", "QuantSpec", "QuantizerSpec", "RANGES", "Rounding",
    "Stage", "Support", "TensorInfo", "UnsafeExternalDataError", "UnsupportedModelError",
    "__version__", "check_dataset_fits", "external_locations", "idle_blas_threads",
    "inspect_dataset",
    "inspect_model", "json_depth", "keep_freed_memory", "package_format",
    "release_freed_memory", "run_job", "unpack", "unpack_file", "validate_job",
    "warm_kernels", "warm_up_job",
]  # fmt: skip


def test_exported_names_are_exactly_these() -> None:
    assert sorted(quantcore.__all__) == sorted(EXPORTED)
    assert sorted(dir(quantcore)) == sorted(EXPORTED)


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(quantcore, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        quantcore.no_such_name  # noqa: B018


def test_importing_the_face_and_validating_a_spec_loads_nothing_heavy() -> None:
    code = (
        "import sys, quantcore\n"
        "quantcore.validate_job('quantize', {'bits': 3})\n"
        "heavy = ('onnx', 'onnxruntime', 'scipy', 'constriction')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_share_one_base_with_a_code() -> None:
    errors = [getattr(quantcore, n) for n in EXPORTED if n.endswith("Error")]
    for error in errors:
        assert issubclass(error, quantcore.QuantError)
        assert isinstance(error("x").code, str)
