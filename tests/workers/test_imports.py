"""A worker process loads the core, the store and the queue, never the web framework."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.workers.services import ROOT

WEB = ("fastapi", "starlette", "uvicorn", "python_multipart")


def test_importing_the_task_loads_no_web_framework() -> None:
    code = (
        "import json, sys; import workers.tasks; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "workers" in loaded and "celery" in loaded and "service" in loaded
    assert not loaded & set(WEB), sorted(loaded & set(WEB))
