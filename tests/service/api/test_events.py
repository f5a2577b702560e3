"""GET /v1/jobs/{id}/events with a real HTTP client against a served app, and the CLI's
wait that follows it (polling when it cannot)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from service.api.app import create_app
from service.cli.client import Client
from service.cli.events import sse_events
from tests.service.conftest import SettingsFactory, free_port
from tests.service.helpers import ctx_of, finish_job, mlp_bytes


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` behind uvicorn on a loopback port, in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def app(make_settings: SettingsFactory) -> FastAPI:
    return create_app(make_settings(events_poll_interval_s=0.05))


def _submit(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url) as http:
        model = http.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())}).json()
        return dict(http.post("/v1/jobs", json={"model_id": model["id"]}).json())


def _run_slowly(app: FastAPI, job_id: str, tmp: Path) -> threading.Thread:
    """A worker's moves on the job, a little apart, in a thread."""
    ctx = ctx_of(app)

    def work() -> None:
        time.sleep(0.3)
        claimed = ctx.jobs.claim(job_id)
        assert claimed is not None
        for stage, fraction in (("loading", 0.1), ("quantizing", 0.5), ("writing", 0.8)):
            time.sleep(0.25)
            ctx.jobs.set_progress(job_id, stage, fraction, attempt=claimed.attempts)
        time.sleep(0.25)
        # finish_job claims on its own: hand it the job back as a redelivery would
        ctx.jobs.requeue(job_id)
        finish_job(app, job_id, tmp)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_the_stream_follows_a_job_to_its_end(app: FastAPI, tmp_path: Path) -> None:
    with served(app) as url:
        job = _submit(url)
        worker = None
        seen: list[dict[str, Any]] = []
        with httpx.Client(base_url=url, timeout=30) as http, \
                http.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            for event, data in sse_events(response.iter_lines()):
                assert event == "job"
                seen.append(json.loads(data))
                if worker is None:  # the job as it was first, then the worker's moves
                    worker = _run_slowly(app, job["id"], tmp_path / "w")
        assert worker is not None
        worker.join(10)
    statuses = [j["status"] for j in seen]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"
    assert "running" in statuses
    stages = [j["stage"] for j in seen if j["status"] == "running"]
    assert {"loading", "quantizing", "writing"} <= set(stages)
    progress = [j["progress"] for j in seen if j["status"] == "running" and j["stage"]]
    assert progress == sorted(progress)
    assert seen[-1]["progress"] == 1.0 and seen[-1]["id"] == job["id"]
    # An event when the state changes, never the same state twice in a row (a state may come
    # back: the worker here hands the job back before finishing it, as a redelivery would).
    states = [(j["status"], j["stage"], j["progress"]) for j in seen]
    assert all(a != b for a, b in itertools.pairwise(states)), states


def test_a_final_job_gives_one_event_and_unknown_ids_404(app: FastAPI, tmp_path: Path) -> None:
    with served(app) as url:
        job = _submit(url)
        finish_job(app, job["id"], tmp_path / "w")
        with httpx.Client(base_url=url, timeout=10) as http:
            r = http.get(f"/v1/jobs/{job['id']}/events")
            events = list(sse_events(r.text.splitlines()))
            assert [json.loads(d)["status"] for _, d in events] == ["succeeded"]
            assert r.text.startswith("retry: 2000")
            r = http.get("/v1/jobs/nope/events")
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_the_cli_waits_on_the_stream(app: FastAPI, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with served(app) as url:
        job = _submit(url)
        worker = _run_slowly(app, job["id"], tmp_path / "w")
        updates: list[dict[str, Any]] = []
        with Client(url) as client:
            def no_polling(job_id: str) -> dict[str, Any]:
                raise AssertionError("wait polled although the stream was there")

            monkeypatch.setattr(client, "job", no_polling)
            final = client.wait(job["id"], on_update=updates.append)
        worker.join(10)
    assert final["status"] == "succeeded" and updates[-1] == final
    assert len(updates) >= 3  # the stream's states, not one poll's


def test_the_cli_polls_when_there_is_no_stream() -> None:
    answers = iter(["queued", "running", "succeeded"])
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})
        return httpx.Response(200, json={"id": "j", "status": next(answers), "progress": 0.5})

    with Client("http://quantserve.test", transport=httpx.MockTransport(handler)) as client:
        final = client.wait("j", poll_s=0.01)
    assert final["status"] == "succeeded"
    assert asked == ["/v1/jobs/j/events", "/v1/jobs/j", "/v1/jobs/j", "/v1/jobs/j"]
