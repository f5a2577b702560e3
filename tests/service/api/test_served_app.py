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
