"""What ``quantserve quantize`` loads before it reads a model: the core and the settings, not
the HTTP client, onnxruntime, numba or the web framework (each costs a tenth of a second or
more at every start; numba loads with the first quantization)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantcore import JobLimits
from service.cli.local import job_limits
from service.settings import Settings
from tests.workers.services import ROOT

NOT_NEEDED = ("httpx", "onnxruntime", "fastapi", "uvicorn", "celery", "sqlalchemy", "numba",
              "llvmlite", "scipy")


def loaded_after(code: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> set[str]:
    listing = "print(json.dumps(sorted(set(sys.modules) | {m.split('.')[0] for m in sys.modules})))"
    probe = f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}; import json; {listing}"
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=True, env=env)  # fmt: skip
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def without_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("QUANTSERVE_")}


def test_the_local_quantize_path_loads_neither_http_nor_onnxruntime_nor_numba() -> None:
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


def test_the_settings_defaults_are_the_cores_job_limits() -> None:
    """What lets ``quantserve quantize`` skip the settings when nothing is set."""
    assert Settings(_env_file=None).job_limits() == JobLimits()  # type: ignore[call-arg]


def test_without_settings_the_quantize_command_loads_no_pydantic(tmp_path) -> None:
    loaded = loaded_after(
        "import service.cli.main, service.cli.local, quantcore.jobs.quantize; "
        "service.cli.local.job_limits()", cwd=tmp_path, env=without_settings(),
    )
    assert "quantcore" in loaded and not loaded & {"pydantic", "pydantic_settings"}


@pytest.mark.parametrize("how", ["variable", "file"])
def test_a_setting_given_either_way_reaches_the_limits(tmp_path, monkeypatch, how) -> None:
    for name in list(os.environ):
        if name.upper().startswith("QUANTSERVE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    if how == "variable":
        monkeypatch.setenv("QUANTSERVE_FIDELITY_MAX_PARAMS", "1234")
    else:
        (tmp_path / ".env").write_text("QUANTSERVE_FIDELITY_MAX_PARAMS=1234\n")
    from service.settings import get_settings

    get_settings.cache_clear()
    try:
        assert job_limits().fidelity_max_params == 1234
    finally:
        get_settings.cache_clear()
    monkeypatch.delenv("QUANTSERVE_FIDELITY_MAX_PARAMS", raising=False)
    (tmp_path / ".env").unlink(missing_ok=True)
    assert job_limits() == JobLimits()
