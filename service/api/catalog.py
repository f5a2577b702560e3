"""Registering uploaded models and datasets: inspect with the core, deduplicate, store.

An upload arrives as a spool file (``service.api.uploads``) whose sha256 is known. Models and
datasets take the same path (``_register``): a team that uploads the same bytes again gets
the same record back; otherwise the core inspects the file (a malformed file raises the core's
error, answered 422 with its code; a size over the settings' input limits, 413), the bytes are
stored once per content (``blobs/<sha256><suffix>``, atomically) and the row is written.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from quantcore import (
    MODEL_SUFFIXES,
    DatasetInfo,
    InvalidModelError,
    ModelInfo,
    inspect_dataset,
    inspect_model,
)
from service.api.auth import Principal
from service.api.deps import AppContext
from service.api.uploads import SpooledFile
from service.errors import UnsupportedMediaTypeError
from service.store.artifacts import blob_key
from service.store.records import DatasetRecord, ModelRecord

DATASET_SUFFIXES = {".npz": "npz"}

Info = TypeVar("Info")
Record = TypeVar("Record", ModelRecord, DatasetRecord)


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


async def _register(
    ctx: AppContext,
    upload: SpooledFile,
    *,
    find: Callable[[str], Record | None],
    inspect: Callable[[Path], Info],
    add: Callable[[Info, str], Record],
) -> Record:
    """The record of ``upload``: ``find(sha256)``'s, or ``add(inspect(file), storage key)``'s
    once the file is stored."""
    existing = await run_in_threadpool(find, upload.sha256)
    if existing is not None:
        return existing
    info = await run_in_threadpool(inspect, upload.path)
    key = blob_key(upload.sha256, upload.suffix)
    await run_in_threadpool(_store, ctx, key, upload)
    return await run_in_threadpool(add, info, key)


def _store(ctx: AppContext, key: str, upload: SpooledFile) -> None:
    if not ctx.storage.exists(key):  # content addressed: the same bytes are stored once
        ctx.storage.adopt(key, upload.path, sha256=upload.sha256)


async def register_model(
    ctx: AppContext, principal: Principal, upload: SpooledFile
) -> ModelRecord:
    """The team's model for this upload: found by sha256, or inspected, stored, created."""
    fmt = check_model_file(upload.filename)
    team_id = principal.team_id

    def find(sha256: str) -> ModelRecord | None:
        return ctx.uploads.model_by_sha256(sha256, team_id=team_id)

    def add(info: ModelInfo, key: str) -> ModelRecord:
        return ctx.uploads.add_model(
            team_id=team_id, sha256=upload.sha256, size_bytes=upload.size_bytes,
            format=info.format or fmt, filename=upload.filename[:300],
            n_tensors=info.n_tensors, n_params=info.n_params,
            tensors=[{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
                      "params": t.params} for t in info.tensors],
            storage_key=key,
        )

    def inspect(path: Path) -> ModelInfo:
        info = inspect_model(path, ctx.settings.input_limits())
        named = next((t.name for t in info.tensors if "\x00" in t.name), None)
        if named is not None:  # names are stored as text, which cannot hold NUL
            raise InvalidModelError(f"{upload.filename}: tensor name {named!r} holds a NUL "
                                    "character")
        return info

    return await _register(ctx, upload, find=find, inspect=inspect, add=add)


async def register_dataset(
    ctx: AppContext, principal: Principal, upload: SpooledFile
) -> DatasetRecord:
    """The team's dataset for this upload: found by sha256, or inspected, stored, created."""
    check_dataset_file(upload.filename)
    team_id = principal.team_id

    def find(sha256: str) -> DatasetRecord | None:
        return ctx.uploads.dataset_by_sha256(sha256, team_id=team_id)

    def add(info: DatasetInfo, key: str) -> DatasetRecord:
        return ctx.uploads.add_dataset(
            team_id=team_id, sha256=upload.sha256, size_bytes=upload.size_bytes,
            filename=upload.filename[:300],
            arrays={name: list(shape) for name, shape in info.arrays.items()},
            storage_key=key,
        )

    inspect = partial(inspect_dataset, limits=ctx.settings.input_limits())
    return await _register(ctx, upload, find=find, inspect=inspect, add=add)
