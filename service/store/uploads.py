"""The uploads of each team: models and datasets, one row per team and distinct content.

A team that uploads the same bytes again (same sha256) finds the row it has; two uploads of
the same bytes racing each other end with one row, which both get. Lookups by id are always
scoped to a team: another team's upload is not found.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.store.db import Database
from service.store.models import Dataset, Model
from service.store.records import DatasetRecord, ModelRecord

Row = TypeVar("Row", Model, Dataset)


class UploadsRepo:
    """Models and datasets of a team; each method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def model(self, model_id: str, *, team_id: str) -> ModelRecord | None:
        row = self._one(Model, Model.team_id == team_id, Model.id == model_id)
        return None if row is None else ModelRecord.of(row)

    def dataset(self, dataset_id: str, *, team_id: str) -> DatasetRecord | None:
        row = self._one(Dataset, Dataset.team_id == team_id, Dataset.id == dataset_id)
        return None if row is None else DatasetRecord.of(row)

    def model_by_sha256(self, sha256: str, *, team_id: str) -> ModelRecord | None:
        row = self._one(Model, Model.team_id == team_id, Model.sha256 == sha256)
        return None if row is None else ModelRecord.of(row)

    def dataset_by_sha256(self, sha256: str, *, team_id: str) -> DatasetRecord | None:
        row = self._one(Dataset, Dataset.team_id == team_id, Dataset.sha256 == sha256)
        return None if row is None else DatasetRecord.of(row)

    def add_model(
        self, *, team_id: str, sha256: str, size_bytes: int, format: str, filename: str,
        n_tensors: int, n_params: int, tensors: list[dict[str, Any]], storage_key: str,
    ) -> ModelRecord:
        """Insert the model, or return the team's model with the same sha256."""
        row = Model(team_id=team_id, sha256=sha256, size_bytes=size_bytes, format=format,
                    filename=filename, n_tensors=n_tensors, n_params=n_params, tensors=tensors,
                    storage_key=storage_key)
        return ModelRecord.of(self._insert_or_existing(row))

    def add_dataset(
        self, *, team_id: str, sha256: str, size_bytes: int, filename: str,
        arrays: dict[str, list[int]], storage_key: str,
    ) -> DatasetRecord:
        """Insert the dataset, or return the team's dataset with the same sha256."""
        row = Dataset(team_id=team_id, sha256=sha256, size_bytes=size_bytes, filename=filename,
                      arrays=arrays, storage_key=storage_key)
        return DatasetRecord.of(self._insert_or_existing(row))

    def model_names(self, ids: Collection[str], *, team_id: str) -> dict[str, str]:
        """The file names of the team's models among ``ids``, by id (the portal's lists)."""
        if not ids:
            return {}
        with self.db.session() as session:
            rows = session.execute(select(Model.id, Model.filename)
                                   .where(Model.team_id == team_id, Model.id.in_(list(ids))))
            return {row.id: row.filename for row in rows}

    def _one(self, table: type[Row], *where: Any) -> Row | None:
        with self.db.session() as session:
            return session.scalar(select(table).where(*where))

    def _insert_or_existing(self, row: Row) -> Row:
        table = type(row)
        with self.db.session() as session:
            session.add(row)
            try:
                session.commit()
                return row
            except IntegrityError:  # the same bytes uploaded concurrently by the same team
                session.rollback()
        found = self._one(table, table.team_id == row.team_id, table.sha256 == row.sha256)
        if found is None:
            raise RuntimeError(f"upload {row.sha256} vanished after a duplicate insert")
        return found
