"""``quantserve submit --presigned``: the model file is PUT straight to the service's S3 store
(moto's server), then completed into the model a plain upload makes."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest

from tests import models
from tests.service.cli.test_cli import quantserve
from tests.workers.conftest import S3_CREDENTIALS, embedded_env
from tests.workers.flow import save_model
from tests.workers.services import Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_submit_presigned_puts_the_model_in_the_bucket(
    service_factory: Callable[[dict[str, str]], Service], s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = f"qs-{uuid.uuid4().hex[:8]}"
    env = {
        **embedded_env(tmp_path),
        **S3_CREDENTIALS,
        "QUANTSERVE_STORAGE": "s3",
        "QUANTSERVE_S3_ENDPOINT_URL": s3_endpoint,
        "QUANTSERVE_S3_BUCKET": bucket,
    }
    service = service_factory(env)
    service.start_api()  # no worker: the job stays queued
    model = save_model(models.mlp(seed=41), tmp_path / "mlp.onnx")
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    run = {**env, "QUANTSERVE_URL": service.url}
    submitted = quantserve("submit", str(model), "--presigned", "--spec", '{"bits": 4}', env=run)
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["status"] == "queued"
    assert '"path": "/v1/models/uploads/' in service.logs()  # not POST /v1/models
    assert '"path": "/v1/models",' not in service.logs()
    got = httpx.get(f"{service.url}/v1/models/{job['model_id']}").json()
    assert got["sha256"] == sha256 and got["size_bytes"] == model.stat().st_size
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert sorted(item["Key"] for item in listed) == [f"blobs/{sha256}.onnx"]
    # batch --presigned: a second model, by the same way
    other = save_model(models.mlp(seed=43), tmp_path / "other.onnx")
    lines = tmp_path / "jobs.jsonl"
    lines.write_text(json.dumps({"model": str(other), "spec": {"bits": 3}}) + "\n")
    batch = quantserve("batch", str(lines), "--presigned", env=run)
    assert batch.returncode == 0, batch.stderr
    assert json.loads(batch.stdout)["ok"] is True
    other_sha = hashlib.sha256(other.read_bytes()).hexdigest()
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert sorted(item["Key"] for item in listed) == sorted(
        [f"blobs/{sha256}.onnx", f"blobs/{other_sha}.onnx"]
    )
    assert '"path": "/v1/models",' not in service.logs()
    # a plain upload of the same file is the same model
    with open(model, "rb") as f:
        plain = httpx.post(f"{service.url}/v1/models", files={"file": ("mlp.onnx", f)})
    assert plain.status_code == 201 and plain.json() == got


def test_submit_presigned_to_a_local_store_says_why_not(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    env = embedded_env(tmp_path)
    service = service_factory(env)
    service.start_api()
    model = save_model(models.mlp(seed=42), tmp_path / "mlp.onnx")
    submitted = quantserve(
        "submit", str(model), "--presigned", env={**env, "QUANTSERVE_URL": service.url}
    )
    assert submitted.returncode == 1
    assert "409 presigned_uploads_unavailable" in submitted.stderr


def test_a_dataset_and_the_artifacts_go_through_the_bucket(
    service_factory: Callable[[dict[str, str]], Service], s3_endpoint: str, tmp_path: Path
) -> None:
    env = {
        **embedded_env(tmp_path),
        **S3_CREDENTIALS,
        "QUANTSERVE_STORAGE": "s3",
        "QUANTSERVE_S3_ENDPOINT_URL": s3_endpoint,
        "QUANTSERVE_S3_BUCKET": f"qs-{uuid.uuid4().hex[:8]}",
    }
    service = service_factory(env)
    service.start_api(with_worker=True)
    run = {**env, "QUANTSERVE_URL": service.url}
    model = save_model(models.mlp(seed=44), tmp_path / "mlp.onnx")
    dataset = tmp_path / "eval.npz"
    rng = np.random.default_rng(3)
    np.savez(dataset, x=rng.standard_normal((16, 16)).astype(np.float32),
             labels=rng.integers(0, 4, 16))
    submitted = quantserve("submit", str(model), "--dataset", str(dataset), "--presigned",
                           "--spec", '{"bits": 4}', "--wait", env=run)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + service.logs()
    done = json.loads(submitted.stdout)
    job = done["id"]
    assert '"path": "/v1/datasets/uploads/' in service.logs()  # the dataset went to S3 too
    assert '"path": "/v1/datasets",' not in service.logs()
    report = httpx.get(f"{service.url}/v1/jobs/{job}/report").json()
    assert report["accuracy"]["samples"] == 16, report["accuracy"]

    fetched = quantserve("fetch", job, "--presigned", "--out", str(tmp_path / "direct"), env=run)
    assert fetched.returncode == 0, fetched.stderr
    direct = {json.loads(line)["name"]: json.loads(line) for line in fetched.stdout.splitlines()}
    assert {"model.onnx", "model.qpack", "report.json"} <= set(direct)
    for item in direct.values():
        assert hashlib.sha256(Path(item["path"]).read_bytes()).hexdigest() == item["sha256"]
    assert f'/v1/jobs/{job}/artifacts/model.onnx/url"' in service.logs()
    assert f'/v1/jobs/{job}/artifacts/model.onnx"' not in service.logs()  # not through the API

    plain = quantserve("fetch", job, "--out", str(tmp_path / "plain"), env=run)
    assert plain.returncode == 0, plain.stderr
    for name in direct:
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes()
