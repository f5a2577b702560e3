"""What ``quantserve quantize`` loads before it reads a model: the core and the settings, not
the HTTP client, onnxruntime or the web framework (each costs a tenth of a second or more at
every start)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.workers.services import ROOT

NOT_NEEDED = ("httpx", "onnxruntime", "fastapi", "uvicorn", "celery", "sqlalchemy", "scipy")


def loaded_after(code: str) -> set[str]:
    listing = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}; import json, sys; {listing}"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_local_quantize_path_loads_neither_http_nor_onnxruntime() -> None:
    loaded = loaded_after(
        "import service.cli.main, service.cli.local, quantcore.jobs.quantize"
    )
    assert {"quantcore", "onnx", "numpy"} <= loaded
    assert not loaded & set(NOT_NEEDED), sorted(loaded & set(NOT_NEEDED))


def test_parsing_any_command_line_loads_no_command() -> None:
    loaded = loaded_after(
        "from service.cli.main import build_parser; build_parser().parse_args(['status', 'x'])"
    )
    assert not loaded & {"httpx", "quantcore", "numpy"}, sorted(loaded & {"httpx", "quantcore"})
