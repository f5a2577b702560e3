"""Registering uploaded models and datasets: inspect with the core, deduplicate, store.

An upload arrives as a spool file (``service.api.uploads``) whose sha256 is known. The core
inspects it (a malformed file raises the core's error, answered 422 with its code); a team
that uploads the same bytes again gets the same row back; the bytes are stored once per
content (``blobs/<sha256><suffix>``), atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from quantcore.evaluate.dataset import inspect_dataset
from quantcore.formats.model import SUFFIXES
from quantcore.jobs import run as core
from service.api.auth import Principal
from service.api.deps import AppContext
from service.api.uploads import SpooledFile
from service.errors import UnsupportedMediaTypeError
from service.store.artifacts import blob_key
from service.store.models import Dataset, Model

MODEL_SUFFIXES = {suffix: fmt.value for suffix, fmt in SUFFIXES.items()}  # ".onnx" → "onnx"
DATASET_SUFFIXES = {".npz": "npz"}


def check_model_file(filename: str) -> str:
    """The model format that ``filename``'s suffix names; 415 for any other suffix."""
    fmt = MODEL_SUFFIXES.get(Path(filename).suffix.lower())
    if fmt is None:
        raise UnsupportedMediaTypeError(
            f"model file {filename!r} has an unknown format; "
            f"expected one of: {', '.join(MODEL_SUFFIXES)}",
            details={"filename": filename},
        )
    return fmt


def check_dataset_file(filename: str) -> None:
    if Path(filename).suffix.lower() not in DATASET_SUFFIXES:
        raise UnsupportedMediaTypeError(
            f"dataset file {filename!r} has an unknown format; expected .npz",
            details={"filename": filename},
        )


async def register_model(ctx: AppContext, principal: Principal, upload: SpooledFile) -> Model:
    """The team's model row for this upload: found by sha256, or inspected, stored, created."""
    fmt = check_model_file(upload.filename)
    existing = await run_in_threadpool(_find, ctx, Model, principal.team_id, upload.sha256)
    if existing is not None:
        return existing
    info = await run_in_threadpool(core.inspect_model, upload.path)
    key = blob_key(upload.sha256, upload.suffix)
    await run_in_threadpool(_store, ctx, key, upload)
    row = Model(
        team_id=principal.team_id, sha256=upload.sha256, size_bytes=upload.size_bytes,
        format=info.format or fmt, filename=upload.filename[:300],
        n_tensors=info.n_tensors, n_params=info.n_params,
        tensors=[{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "params": t.params}
                 for t in info.tensors],
        storage_key=key,
    )
    return await run_in_threadpool(
        _insert_or_existing, ctx, row, Model, principal.team_id, upload.sha256
    )


async def register_dataset(
    ctx: AppContext, principal: Principal, upload: SpooledFile
) -> Dataset:
    check_dataset_file(upload.filename)
    existing = await run_in_threadpool(_find, ctx, Dataset, principal.team_id, upload.sha256)
    if existing is not None:
        return existing
    info = await run_in_threadpool(inspect_dataset, upload.path)
    key = blob_key(upload.sha256, upload.suffix)
    await run_in_threadpool(_store, ctx, key, upload)
    row = Dataset(
        team_id=principal.team_id, sha256=upload.sha256, size_bytes=upload.size_bytes,
        filename=upload.filename[:300],
        arrays={name: list(shape) for name, shape in info.arrays.items()},
        storage_key=key,
    )
    return await run_in_threadpool(
        _insert_or_existing, ctx, row, Dataset, principal.team_id, upload.sha256
    )


def _store(ctx: AppContext, key: str, upload: SpooledFile) -> None:
    if not ctx.storage.exists(key):  # content addressed: the same bytes are stored once
        ctx.storage.adopt(key, upload.path, sha256=upload.sha256)


Upload = TypeVar("Upload", Model, Dataset)


def _find(ctx: AppContext, table: type[Upload], team_id: str, sha256: str) -> Upload | None:
    with ctx.db.session() as session:
        return session.scalar(
            select(table).where(table.team_id == team_id, table.sha256 == sha256)
        )


def _insert_or_existing(
    ctx: AppContext, row: Upload, table: type[Upload], team_id: str, sha256: str
) -> Upload:
    with ctx.db.session() as session:
        session.add(row)
        try:
            session.commit()
            return row
        except IntegrityError:  # the same bytes uploaded concurrently by the same team
            session.rollback()
    found = _find(ctx, table, team_id, sha256)
    if found is None:
        raise RuntimeError(f"upload {sha256} vanished after a duplicate insert")
    return found
