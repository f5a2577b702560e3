"""A zip bomb with the default limits, and a full disk: the API refuses both with a code,
in bounded memory, and readiness can tell that the disk is full."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings
from tests import bad_files as bf
from tests.service.helpers import dataset_bytes, mlp_bytes


def test_a_1mb_zip_bomb_is_refused_from_its_headers_with_default_limits(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """1 MB inflating to 1 GiB: under the default total (8 GiB) but a thousand times its own
    size; refused before anything is inflated, whatever the memory."""
    import resource

    bomb = bf.deflate_bomb(1 << 30)
    assert len(bomb) < 1_100_000
    app = create_app(make_settings(max_upload_bytes=4 << 20))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with TestClient(app, raise_server_exceptions=False) as client:
        for route, name in (("/v1/models", "bomb.npz"), ("/v1/datasets", "bomb.npz")):
            r = client.post(route, files={"file": (name, bomb)})
            assert r.status_code == 413, r.text
            error = r.json()["error"]
            assert error["code"] == "payload_too_large"
            assert "inflates 1029 times" in error["message"] or "a zip bomb" in error["message"]
            assert error["details"]["limit"] == "max_inflation_ratio"
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 256 << 10  # far below the gigabyte it inflates to


def test_a_full_disk_is_507_and_readiness_can_tell(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from service.api import uploads
    from service.store import storage

    app = create_app(make_settings())

    def no_space(*_args: Any, **_kw: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    with TestClient(app, raise_server_exceptions=False) as client:
        with monkeypatch.context() as patch:  # the storage write
            patch.setattr(storage.LocalStorage, "adopt", lambda *a, **k: _raise_full(storage))
            r = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())})
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "storage_full"
        assert r.headers["Retry-After"] == "60"
        assert "no space left" in (storage.storage_full() or "")
        with monkeypatch.context() as patch:  # the upload's spool file
            patch.setattr(uploads.tempfile, "mkdtemp", no_space)
            r = client.post("/v1/datasets", files={"file": ("d.npz", dataset_bytes())})
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "storage_full"
        r = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())})
        assert r.status_code == 201, r.text
        assert storage.storage_full() is None  # a write went through: no longer full


def _raise_full(storage: Any) -> Any:
    import errno

    with storage.writing("'blobs/x' in local storage"):
        raise OSError(errno.ENOSPC, "No space left on device")
