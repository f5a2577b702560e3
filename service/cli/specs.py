"""``--spec``: inline JSON or a JSON file, shared by the local and the remote commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_spec(value: str | None) -> dict[str, Any]:
    """A spec from ``--spec``: inline JSON (``{...}``), or the path of a JSON file."""
    if value is None:
        return {}
    text = value if value.lstrip().startswith("{") else None
    if text is None:
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"--spec {value!r} is neither a JSON object nor a file")
        text = path.read_text(encoding="utf-8")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--spec is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise ValueError(f"--spec must be a JSON object, got {type(spec).__name__}")
    return spec
