"""A worker job on a large external-data model, as the service runs it, for ``bench_large``.

1. An API process (``create_app`` under uvicorn on 127.0.0.1, SQLite and local storage in a
   temporary folder) takes the model and its data file as a streamed multipart upload from
   httpx (file objects, sent in chunks) and the job's submission.
2. A worker process runs ``workers.tasks.execute_job`` on it: the model and data are copied
   from storage into the job's folder, quantized tensor by tensor, the artifacts stored.

Only the worker process's wall time and peak RSS (``os.wait4``) are the row's figures; the
upload's are printed as a note.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx

from bench.bench_large import run_child
from bench.common import free_port


def _env(folder: Path) -> dict[str, str]:
    return {
        "QUANTSERVE_DATABASE_URL": f"sqlite:///{folder}/quantserve.db",
        "QUANTSERVE_BROKER_URL": f"sqla+sqlite:///{folder}/broker.db",
        "QUANTSERVE_STORAGE": "local",
        "QUANTSERVE_STORAGE_PATH": str(folder / "storage"),
        "QUANTSERVE_RATE_LIMIT_PER_MINUTE": "0",
        "QUANTSERVE_MAX_UPLOAD_BYTES": str(1 << 40),
    }


def upload_and_submit(model: Path, ids: Path) -> None:
    """(API child) Serve the app on loopback, upload ``model`` with its data file, submit a
    default quantize job; write the ids to ``ids``."""
    import uvicorn

    from service.api.app import create_app
    from service.settings import Settings

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings()), host="127.0.0.1",
                                           port=port, log_level="error"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    start = time.perf_counter()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=3600) as client, \
                model.open("rb") as onnx_file, \
                (model.parent / "model.onnx.data").open("rb") as data_file:  # fmt: skip
            response = client.post("/v1/models", files={
                "file": ("model.onnx", onnx_file),
                "external_data": ("model.onnx.data", data_file),
            })  # fmt: skip
            response.raise_for_status()
            upload_s = time.perf_counter() - start
            model_id = response.json()["id"]
            job = client.post("/v1/jobs", json={"model_id": model_id, "spec": {}})
            job.raise_for_status()
        ids.write_text(json.dumps({"job_id": job.json()["id"], "upload_s": upload_s}))
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def execute(job_id: str) -> None:
    """(worker child) Run the job as a worker process does."""
    from service.settings import Settings
    from workers.tasks import Outcome, WorkerContext, execute_job

    outcome = execute_job(job_id, WorkerContext.from_settings(Settings()))
    if outcome is not Outcome.SUCCEEDED:
        raise SystemExit(f"job {job_id}: {outcome}")


def run_worker_job(model: Path, folder: Path) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (bytes) of the worker process, and a note."""
    folder.mkdir(parents=True, exist_ok=True)
    env = _env(folder.resolve())
    ids = folder / "ids.json"
    up_wall, up_rss, _ = run_child([sys.executable, "-m", "bench.large_worker", "upload",
                                    str(model), str(ids)], env=env)  # fmt: skip
    job_id = json.loads(ids.read_text())["job_id"]
    wall, rss, _ = run_child([sys.executable, "-m", "bench.large_worker", "execute", job_id],
                             env=env)  # fmt: skip
    note = (f"upload through the API {up_wall:.0f} s, API process peak RSS "
            f"{up_rss / 1e6:.0f} MB")  # fmt: skip
    return wall, rss, note


if __name__ == "__main__":
    if sys.argv[1] == "upload":
        upload_and_submit(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "execute":
        execute(sys.argv[2])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}; {os.path.basename(__file__)}")
