"""Uploads of models and datasets: streamed, hashed, inspected by the core, deduplicated."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.service.conftest import SettingsFactory
from tests.service.helpers import ctx_of, dataset_bytes, mlp_bytes, upload_model


def test_model_upload_is_inspected_and_stored(client: TestClient) -> None:
    data = mlp_bytes()
    body = upload_model(client, data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size_bytes"] == len(data)
    assert body["format"] == "onnx"
    # mlp (16, 32, 24, 10): three Gemm weights and three biases
    assert body["n_tensors"] == 6
    assert body["n_params"] == 16 * 32 + 32 + 32 * 24 + 24 + 24 * 10 + 10
    weight = next(t for t in body["tensors"] if t["name"] == "fc0.weight")
    assert weight == {"name": "fc0.weight", "shape": [32, 16], "dtype": "float32", "params": 512}
    storage = ctx_of(client.app).storage  # type: ignore[arg-type]
    assert b"".join(storage.iter_bytes(f"blobs/{body['sha256']}.onnx")) == data
    assert client.get(f"/v1/models/{body['id']}").json() == body


def test_same_bytes_give_the_same_model(client: TestClient) -> None:
    first = upload_model(client, mlp_bytes(seed=1), name="a.onnx")
    again = upload_model(client, mlp_bytes(seed=1), name="renamed.onnx")
    other = upload_model(client, mlp_bytes(seed=2))
    assert again["id"] == first["id"]
    assert other["id"] != first["id"]


def test_dataset_upload(client: TestClient) -> None:
    r = client.post("/v1/datasets", files={"file": ("eval.npz", dataset_bytes(n=8, n_in=16))})
    assert r.status_code == 201, r.text
    assert r.json()["arrays"] == {"x": [8, 16], "labels": [8]}


def test_streamed_upload_without_content_length_is_cut_at_the_limit(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A chunked body (no Content-Length) is counted while it streams: 413, nothing kept."""
    settings = make_settings(max_upload_bytes=200_000)
    boundary = "XyZboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.onnx\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(50):
            yield b"\0" * 10_000  # 500 kB in all
        yield f"\r\n--{boundary}--\r\n".encode()

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/models", content=body(),
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"
    assert "200000" in r.json()["error"]["message"]
    spool = Path(settings.storage_path).resolve() / ".spool"
    assert list(spool.iterdir()) == []
    assert not (Path(settings.storage_path) / "blobs").exists()


def test_safetensors_model(client: TestClient) -> None:
    import numpy as np
    from safetensors.numpy import save

    w = {"fc.weight": np.ones((4, 3), np.float32), "fc.bias": np.zeros(4, np.float32)}
    r = client.post("/v1/models", files={"file": ("w.safetensors", save(w))})
    assert r.status_code == 201, r.text
    assert (r.json()["format"], r.json()["n_params"]) == ("safetensors", 16)
