"""Domain errors of the core.

Every error carries a stable machine-readable ``code`` and a message a person can act on.
The service maps each class to one HTTP status (see ``service.errors``); a failed job stores
``code`` and ``message`` as they are.
"""

from __future__ import annotations

from typing import Any


class QuantError(Exception):
    """Base of every domain error raised by ``quantcore``."""

    code = "quant_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidSpecError(QuantError):
    """A quantization spec field is missing, of the wrong type or out of range."""

    code = "invalid_spec"


class InvalidTensorError(QuantError):
    """A tensor cannot be quantized as it is (NaN or Inf, empty, not floating point)."""

    code = "invalid_tensor"


class InvalidModelError(QuantError):
    """The uploaded file is not a readable model (not ONNX, truncated, corrupt)."""

    code = "invalid_model"


class UnsupportedModelError(QuantError):
    """A readable model that uses something the service cannot handle (opset, operator)."""

    code = "unsupported_model"


class UnsafeExternalDataError(QuantError):
    """External data that is missing or whose location escapes the model's folder."""

    code = "unsafe_external_data"


class NoWeightsError(QuantError):
    """The model has no floating-point weight that the policy would quantize."""

    code = "no_weights"


class InvalidDatasetError(QuantError):
    """An evaluation set that does not fit the model (names, dtypes, shapes, labels, NaN)."""

    code = "invalid_dataset"


class InvalidPackageError(QuantError):
    """A ``.qpack`` file that is truncated, corrupt or of an unknown layout version."""

    code = "invalid_package"


class InputTooLargeError(QuantError):
    """A file that declares (or inflates to) more bytes than a limit of ``InputLimits``
    allows; ``details`` names the limit, its value and the size found."""

    code = "payload_too_large"
