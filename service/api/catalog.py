"""Registering uploaded models and datasets: inspect with the core, deduplicate, store.

An upload arrives as a spool file (``service.api.uploads``) whose sha256 is known. Models and
datasets take the same path (``_register``): a team that uploads the same bytes again gets
the same record back; otherwise the core inspects the file (a malformed file raises the core's
error, answered 422 with its code; a size over the settings' input limits, 413), the bytes are
stored once per content (``blobs/<sha256><suffix>``, atomically) and the row is written.

An ONNX model may come with its external data file (models over 2 GB): the model's sha256 is
then that of the two files' digests together, the data file is stored beside the model's blob
(``service.store.artifacts.external_key``) and the model is inspected with the data file
placed under the one location its tensors name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
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
    external_locations,
    inspect_dataset,
    inspect_model,
)
from service.api.auth import Principal
from service.api.deps import AppContext
from service.api.uploads import SpooledFile
from service.errors import UnprocessableError, UnsupportedMediaTypeError
from service.store.artifacts import blob_key, external_key
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
    place: Callable[[str], None] | None = None,
) -> Record:
    """The record of ``upload``: ``find(sha256)``'s, or ``add(inspect(file), storage key)``'s
    once the file is stored (by ``place(key)`` if given: the bytes are in storage already)."""
    existing = await run_in_threadpool(find, upload.sha256)
    if existing is not None:
        return existing
    info = await run_in_threadpool(inspect, upload.path)
    key = blob_key(upload.sha256, upload.suffix)
    if place is None:
        await run_in_threadpool(_store, ctx, key, upload)
    else:
        await run_in_threadpool(place, key)
    return await run_in_threadpool(add, info, key)


def _store(ctx: AppContext, key: str, upload: SpooledFile) -> None:
    if not ctx.storage.exists(key):  # content addressed: the same bytes are stored once
        ctx.storage.adopt(key, upload.path, sha256=upload.sha256)


def _linked(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # links not allowed here: a copy
        shutil.copyfile(source, target)


def _inspect_with_data(
    ctx: AppContext, model: Path, data: SpooledFile, inspect: Callable[[Path], ModelInfo]
) -> ModelInfo:
    """``inspect`` of ``model`` with the data file under the one location it names."""
    locations = external_locations(model)
    if len(locations) != 1:
        raise UnprocessableError(
            "an external_data file goes with a model whose tensors name one external file; "
            f"this one names {len(locations)}: {list(locations)[:5]}",
            details={"locations": list(locations)[:20]},
        )
    folder = Path(tempfile.mkdtemp(dir=ctx.spool_dir, prefix="inspect-"))
    try:
        _linked(model, folder / "model.onnx")
        target = folder / locations[0]
        if not target.resolve().is_relative_to(folder.resolve()):
            raise InvalidModelError(f"external data location {locations[0]!r} leaves the "
                                    "model's folder")  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True)
        _linked(data.path, target)
        return inspect(folder / "model.onnx")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def register_model(
    ctx: AppContext, principal: Principal, upload: SpooledFile,
    external: SpooledFile | None = None, *, place: Callable[[str], None] | None = None,
) -> ModelRecord:
    """The team's model for this upload (and its external data file): found by sha256, or
    inspected, stored, created. ``place(key)`` stores a file that is in storage already (a
    presigned upload's object) instead of the spool file; not with ``external``."""
    fmt = check_model_file(upload.filename)
    if external is not None and fmt != "onnx":
        raise UnprocessableError(f"external_data goes with an .onnx model, not {fmt}")
    team_id = principal.team_id

    def find(sha256: str) -> ModelRecord | None:
        return ctx.uploads.model_by_sha256(sha256, team_id=team_id)

    sha256, size_bytes = upload.sha256, upload.size_bytes
    if external is not None:  # the model is both files: one digest of the two
        sha256 = hashlib.sha256(f"{upload.sha256}+{external.sha256}".encode()).hexdigest()
        size_bytes += external.size_bytes

    def add(info: ModelInfo, key: str) -> ModelRecord:
        return ctx.uploads.add_model(
            team_id=team_id, sha256=sha256, size_bytes=size_bytes,
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

    if external is None:
        return await _register(ctx, upload, find=find, inspect=inspect, add=add, place=place)
    existing = await run_in_threadpool(find, sha256)
    if existing is not None:
        return existing
    info = await run_in_threadpool(_inspect_with_data, ctx, upload.path, external, inspect)
    key = blob_key(sha256, upload.suffix)
    # The data first: a model row's blob is there only once its data file is.
    await run_in_threadpool(_store, ctx, external_key(key), external)
    await run_in_threadpool(_store, ctx, key, upload)
    return await run_in_threadpool(add, info, key)


async def register_dataset(
    ctx: AppContext, principal: Principal, upload: SpooledFile, *,
    place: Callable[[str], None] | None = None,
) -> DatasetRecord:
    """The team's dataset for this upload: found by sha256, or inspected, stored, created.
    ``place(key)`` stores a file that is in storage already (``register_model``'s)."""
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
    return await _register(ctx, upload, find=find, inspect=inspect, add=add, place=place)
