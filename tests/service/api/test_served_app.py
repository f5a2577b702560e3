"""The app as ``quantserve serve`` builds it: the publishing app made before the first request,
and the objects of start-up frozen out of the garbage collector's full passes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_served_app
from tests.service.conftest import SettingsFactory
from tests.service.helpers import mlp_bytes


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfreeze")
def test_served_app_freezes_start_up_objects_and_accepts_jobs(
    make_settings: SettingsFactory,
) -> None:
    from service.queue.enqueue import _apps

    settings = make_settings()
    app = create_served_app(settings)
    assert gc.get_freeze_count() > 0
    assert any(key[0] == settings.broker_url for key in _apps)  # built before any request
    with TestClient(app) as client:
        model = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())}).json()
        r = client.post("/v1/jobs", json={"model_id": model["id"]})
        assert r.status_code == 202, r.text


def test_served_app_loads_the_broker_transport_before_freezing(tmp_path) -> None:
    """The Redis transport (kombu's and redis-py, some hundred modules) is imported before the
    freeze, not by the first publish, and no connection is opened for it (nothing listens on
    the port given)."""
    import json
    import os
    import subprocess
    import sys

    from tests.workers.services import ROOT, free_port

    code = (
        "import gc, json, sys; from service.api.app import create_served_app; "
        "create_served_app(); "
        "print(json.dumps([gc.get_freeze_count(), 'kombu.transport.redis' in sys.modules, "
        "'redis.client' in sys.modules]))"
    )
    env = {**os.environ, "QUANTSERVE_DATABASE_URL": f"sqlite:///{tmp_path}/q.db",
           "QUANTSERVE_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
           "QUANTSERVE_STORAGE": "local", "QUANTSERVE_STORAGE_PATH": str(tmp_path / "s")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    frozen, transport, client = json.loads(done.stdout.strip().splitlines()[-1])
    assert frozen > 0 and transport and client
