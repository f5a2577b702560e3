"""Each pool process warms itself up as it starts (``workers.warmup``): numba and onnxruntime
are loaded before its first job, its job folder is gone afterwards, and jobs run as before."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import models
from tests.workers.conftest import embedded_env
from tests.workers.flow import save_model, submit_ok, upload_model, wait_final
from tests.workers.services import Service, wait_for
from workers.temp import TMP_PREFIX
from workers.warmup import WARM_UP_NAME, warm_up

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# Shared libraries that only the job path maps into a process: numba's LLVM and onnxruntime.
JOB_LIBRARIES = ("libllvmlite", "onnxruntime_pybind11_state")
WARMED = "pool process warmed up in"


def _pool_processes(worker_pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{worker_pid}/task/{worker_pid}/children")
            .read_text().split()]  # fmt: skip


def _mapped(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {lib for lib in JOB_LIBRARIES if lib in maps}


def _warm_up_folders() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{WARM_UP_NAME}-*"))


def test_the_warm_up_job_runs_in_process_and_leaves_no_folder() -> None:
    before = set(_warm_up_folders())
    assert warm_up() > 0
    assert set(_warm_up_folders()) == before


@pytest.mark.parametrize("warm", [True, False])
def test_pool_processes_load_the_job_path_before_their_first_job_when_asked(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path, warm: bool
) -> None:
    env = {**embedded_env(tmp_path), "QUANTSERVE_WORKER_WARM_UP": str(warm).lower()}
    service = service_factory(env)
    service.start_api()
    worker = service.start_worker(concurrency=2)
    wait_for(lambda: len(_pool_processes(worker.pid)) == 2, 60, "two pool processes")
    if warm:
        wait_for(lambda: worker.log.read_text().count(WARMED) == 2, 120, "both warm-ups",
                 interval_s=0.5)  # fmt: skip
    else:
        wait_for(lambda: "ready" in worker.log.read_text(), 60, "the worker")
    pool = _pool_processes(worker.pid)
    for pid in pool:
        assert _mapped(pid) == (set(JOB_LIBRARIES) if warm else set()), (pid, warm)
    left = [f for f in _warm_up_folders() for pid in pool if f"-{pid}-" in f.name]
    assert not left, left
    model = save_model(models.mlp((64, 128, 10)), tmp_path / "m.onnx")
    with service.client() as client:
        job = submit_ok(client, upload_model(client, model)["id"], {"bits": 4})
        done = wait_final(client, job["id"], 120, service.logs)
    assert done["status"] == "succeeded", (done, service.logs())
    assert "warm-up failed" not in worker.log.read_text()
