"""The store's records carry the columns of their tables, under the same names."""

from __future__ import annotations

from dataclasses import fields

import pytest

from service.store.models import Artifact, Base, Dataset, Job, Model
from service.store.records import ArtifactRecord, DatasetRecord, JobRecord, ModelRecord


@pytest.mark.parametrize(
    ("record", "table", "left_out"),
    [
        (JobRecord, Job, set()),
        (ModelRecord, Model, set()),
        (DatasetRecord, Dataset, set()),
        (ArtifactRecord, Artifact, {"id", "job_id", "created_at"}),  # what the API shows
    ],
)
def test_record_fields_are_table_columns(
    record: type, table: type[Base], left_out: set[str]
) -> None:
    columns = {c.name for c in table.__table__.columns}
    assert {f.name for f in fields(record)} == columns - left_out
