"""Write the OpenAPI document generated from the app: ``python -m service.api.openapi_export
openapi/openapi.json``. A test compares the committed file with a fresh export."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from service.api.app import create_app
from service.settings import Settings


def openapi_document() -> dict[str, Any]:
    """The document for default settings; nothing is migrated or written to build it."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite:///{tmp}/openapi.db",
            storage_path=f"{tmp}/storage",
        )
        return create_app(settings, migrate=False).openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "openapi/openapi.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
