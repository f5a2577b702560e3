"""Presigned uploads of evaluation sets: announce at /v1/datasets/uploads, PUT straight to S3
(moto's server), complete into the dataset a streamed upload makes. Uploads of one kind are
unknown to the other's routes."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.bad_files import claiming_npz
from tests.service.api.test_presigned_uploads import (
    DATASETS,
    MODELS,
    announce,
    complete,
    keys,
    put,
    start,
    team,
)
from tests.service.helpers import dataset_bytes, mlp_bytes


def start_dataset(client: TestClient, headers: dict[str, str], data: bytes) -> dict[str, Any]:
    return start(client, headers, data, "eval.npz", uploads=DATASETS)


def complete_dataset(client: TestClient, headers: dict[str, str],
                     upload_id: str) -> httpx.Response:
    return complete(client, headers, upload_id, uploads=DATASETS)


def test_a_presigned_dataset_is_the_one_a_streamed_upload_makes(s3_client: TestClient) -> None:
    a, b = team(s3_client), team(s3_client)
    data = dataset_bytes(n=12)
    upload = start_dataset(s3_client, a, data)
    assert upload["url"].split("?")[0].endswith(".npz")
    put(upload, data)
    r = complete_dataset(s3_client, a, upload["id"])
    assert r.status_code == 201, r.text
    dataset = r.json()
    assert dataset["arrays"] == {"x": [12, 16], "labels": [12]}
    assert dataset["sha256"] == hashlib.sha256(data).hexdigest()
    assert s3_client.get(f"/v1/datasets/{dataset['id']}", headers=a).json() == dataset
    again = complete_dataset(s3_client, a, upload["id"])  # completing again: the same one
    assert again.status_code == 201 and again.json() == dataset
    streamed = s3_client.post("/v1/datasets", files={"file": ("eval.npz", io.BytesIO(data))},
                              headers=b)
    assert streamed.status_code == 201, streamed.text
    drop = {"id", "created_at"}
    assert {k: v for k, v in dataset.items() if k not in drop} == {
        k: v for k, v in streamed.json().items() if k not in drop}
    assert keys(s3_client, "uploads/") == []  # the upload's object went once copied
    assert keys(s3_client, f"blobs/{dataset['sha256']}") != []


def test_uploads_of_one_kind_are_unknown_to_the_others_routes(s3_client: TestClient) -> None:
    a = team(s3_client)
    model = mlp_bytes(seed=35)
    model_upload = start(s3_client, a, model)
    put(model_upload, model)
    r = complete_dataset(s3_client, a, model_upload["id"])
    assert r.status_code == 404, r.text
    data = dataset_bytes(n=5)
    dataset_upload = start_dataset(s3_client, a, data)
    put(dataset_upload, data)
    r = complete(s3_client, a, dataset_upload["id"], uploads=MODELS)
    assert r.status_code == 404, r.text
    # Each completes on its own route.
    assert complete_dataset(s3_client, a, dataset_upload["id"]).status_code == 201
    r = complete(s3_client, a, model_upload["id"], uploads=MODELS)
    assert r.status_code == 201, r.text


def test_a_dataset_upload_names_an_npz_and_a_lying_file_is_refused(
    s3_client: TestClient,
) -> None:
    a = team(s3_client)
    r = announce(s3_client, a, b"x" * 10, "eval.onnx", uploads=DATASETS)
    assert r.status_code == 415, r.text
    # An archive claiming a huge array: the streamed path's inspection error, the object gone.
    bad = claiming_npz()
    upload = start_dataset(s3_client, a, bad)
    put(upload, bad)
    r = complete_dataset(s3_client, a, upload["id"])
    assert r.status_code == 413, r.text
    assert keys(s3_client, "uploads/") == []
    assert complete_dataset(s3_client, a, upload["id"]).status_code == 404


def test_a_local_store_has_no_presigned_datasets(client: TestClient) -> None:
    r = announce(client, {}, dataset_bytes(), "eval.npz", uploads=DATASETS)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "presigned_uploads_unavailable"
    assert "POST /v1/datasets instead" in r.json()["error"]["message"]

