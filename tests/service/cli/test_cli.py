"""``quantserve`` from a shell: quantize locally, submit --wait, batch, status, fetch, unpack
and create-key, against a real embedded service."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests import models
from tests.reports import without_timings
from tests.workers.conftest import embedded_env
from tests.workers.flow import save_model
from tests.workers.services import ROOT, Service, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SPEC = {"method": "uniform", "bits": 5, "granularity": "layer"}


def quantserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_console_script_is_declared_and_resolves() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["quantserve"] == "service.cli.main:main"
    module, _, name = scripts["quantserve"].partition(":")
    assert callable(getattr(importlib.import_module(module), name))


def test_warm_fails_naming_a_kernel_the_cache_could_not_hold(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import quantcore
    from service.cli.main import main
    from service.cli.output import EXIT_FAILED

    def unsaved() -> list[object]:
        raise RuntimeError("numba's cache could not be written for 1 kernel(s), the first "
                           "CPUDispatcher(<function spread>) (OSError: [Errno 28] No space)")

    monkeypatch.setattr(quantcore, "warm_kernels", unsaved, raising=False)
    assert main(["warm"]) == EXIT_FAILED
    assert "cache could not be written" in capsys.readouterr().err


def test_bad_spec_argument_exits_2_with_a_message(tmp_path: Path) -> None:
    model = save_model(models.mlp((8, 6, 4)), tmp_path / "m.onnx")
    done = quantserve("quantize", str(model), "--spec", "{bits: 3", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "--spec is not valid JSON" in done.stderr


def test_an_out_that_is_a_file_or_a_model_that_is_a_folder_exits_2_naming_it(
    tmp_path: Path,
) -> None:
    model = save_model(models.mlp((8, 6, 4)), tmp_path / "m.onnx")
    taken = tmp_path / "taken"
    taken.write_text("a file the caller keeps")
    for out in (taken, taken / "below"):
        done = quantserve("quantize", str(model), "--spec", "{}", "--out", str(out))
        assert done.returncode == 2, done.stderr
        assert f"--out {out}: a file is there, not a folder" in done.stderr
        assert "Traceback" not in done.stderr
    assert taken.read_text() == "a file the caller keeps"
    folder = tmp_path / "model.onnx"  # named like a model
    folder.mkdir()
    done = quantserve("quantize", str(folder), "--spec", "{}", "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert f"invalid_model: {folder}: a folder, not a model file" in done.stderr


def test_submit_and_batch_name_a_model_path_that_is_not_a_file(tmp_path: Path) -> None:
    """Said before any request (no service listens at the URL): a folder, or a missing path
    (it has a suffix or a folder, which ids never have), is not sent as a model id."""
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    missing = tmp_path / "gone.onnx"
    nowhere = {"QUANTSERVE_URL": f"http://127.0.0.1:{free_port()}"}
    for ref, said in ((folder, "a folder, not a file"), (missing, "no such file")):
        done = quantserve("submit", str(ref), "--spec", "{}", env=nowhere)
        assert done.returncode == 2, done.stderr
        assert f"model {ref}: {said}" in done.stderr
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(f'{{"model": "{folder}"}}\n{{"model": "{missing}"}}\n')
    done = quantserve("batch", str(jobs), env=nowhere)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["error"]["message"] for line in lines] == [
        f"model {folder}: a folder, not a file", f"model {missing}: no such file"]
    assert done.returncode == 1


def test_quantize_locally_and_through_the_service_give_the_same_artifacts(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    model = save_model(models.mlp((32, 64, 10), seed=4), tmp_path / "mlp.onnx")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))

    local_dir = tmp_path / "local"
    local = quantserve("quantize", str(model), "--spec", str(spec_file), "--out", str(local_dir))
    assert local.returncode == 0, local.stderr
    assert "quantizing" in local.stderr  # the progress bar, on stderr
    summary = json.loads(local.stdout)
    assert {"model.onnx", "model.qpack", "report.json"} <= set(summary["artifacts"])

    env = embedded_env(tmp_path / "svc")
    service = service_factory(env)
    service.start_api(with_worker=True)
    client_env = {**env, "QUANTSERVE_URL": service.url}

    submitted = quantserve(
        "submit", str(model), "--spec", json.dumps(SPEC), "--wait", env=client_env
    )
    assert submitted.returncode == 0, submitted.stderr + service.logs()
    job = json.loads(submitted.stdout)
    assert job["status"] == "succeeded"
    assert "%" in submitted.stderr

    status = quantserve("status", job["id"], env=client_env)
    assert json.loads(status.stdout)["status"] == "succeeded"

    fetched_dir = tmp_path / "fetched"
    fetched = quantserve("fetch", job["id"], "--out", str(fetched_dir), env=client_env)
    assert fetched.returncode == 0, fetched.stderr
    lines = [json.loads(line) for line in fetched.stdout.splitlines()]
    for line in lines:
        assert sha256(Path(line["path"])) == line["sha256"]

    # Same core, same inputs: byte-identical quantized model and package.
    assert sha256(fetched_dir / "model.onnx") == sha256(local_dir / "model.onnx")
    assert sha256(fetched_dir / "model.qpack") == sha256(local_dir / "model.qpack")
    local_report = json.loads((local_dir / "report.json").read_text())
    remote_report = json.loads((fetched_dir / "report.json").read_text())
    assert without_timings(local_report) == without_timings(remote_report)

    restored = tmp_path / "restored.onnx"
    unpacked = quantserve("unpack", str(fetched_dir / "model.qpack"), "--out", str(restored))
    assert unpacked.returncode == 0, unpacked.stderr
    assert restored.read_bytes() == (fetched_dir / "model.onnx").read_bytes()

    # batch: two good lines, one out of range, one not JSON.
    batch_file = tmp_path / "jobs.jsonl"
    batch_file.write_text(
        "\n".join(
            [
                json.dumps({"model": str(model), "spec": {"method": "uniform", "bits": 3}}),
                json.dumps({"model_id": job["model_id"], "spec": {"method": "mulaw", "bits": 8}}),
                json.dumps({"model": str(model), "spec": {"method": "uniform", "bits": 99}}),
                "{not json",
            ]
        )
        + "\n"
    )
    batch = quantserve("batch", str(batch_file), "--wait", env=client_env)
    assert batch.returncode == 1, batch.stderr
    results = [json.loads(line) for line in batch.stdout.splitlines()]
    submitted_lines = [r for r in results[:4]]
    assert [r["ok"] for r in submitted_lines] == [True, True, False, False]
    assert submitted_lines[2]["error"]["status"] == 422
    assert "bits" in submitted_lines[2]["error"]["message"]
    assert submitted_lines[3]["error"]["code"] == "invalid_line"
    waited = results[4:]
    assert [(r["line"], r["status"]) for r in waited] == [(1, "succeeded"), (2, "succeeded")]


def test_create_key_gives_a_key_the_api_accepts(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    env = {**embedded_env(tmp_path), "QUANTSERVE_AUTH_ENABLED": "true"}
    created = quantserve("create-key", "--team", "vision", env=env)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]

    service = service_factory(env)
    service.start_api()
    assert httpx.get(f"{service.url}/v1/jobs").status_code == 401
    ok = httpx.get(f"{service.url}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200, ok.text
    status = quantserve(
        "status",
        "no-such-job",
        env={**env, "QUANTSERVE_URL": service.url, "QUANTSERVE_API_KEY": key},
    )
    assert status.returncode == 1
    assert "404" in status.stderr
