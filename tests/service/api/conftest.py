"""The API on PostgreSQL and S3 storage (moto's server, a bucket per test), with keys on:
the presigned upload and download tests' service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.service.conftest import SettingsFactory

UPLOAD_TTL_S = 600
DOWNLOAD_TTL_S = 120


@pytest.fixture
def s3_client(
    make_settings: SettingsFactory, postgres_url: str, s3_endpoint: str
) -> Iterator[TestClient]:
    settings = make_settings(database_url=postgres_url, storage="s3", s3_endpoint_url=s3_endpoint,
                             s3_bucket=f"qs-{uuid.uuid4().hex[:8]}", auth_enabled=True,
                             presigned_upload_ttl_s=UPLOAD_TTL_S,
                             presigned_download_ttl_s=DOWNLOAD_TTL_S)  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
