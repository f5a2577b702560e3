"""Presigned uploads: the caller PUTs a model (or an evaluation set) straight to S3, then the
API makes it a model (or a dataset); ``kind`` says which, and an upload of one kind is unknown
to the other's routes.

1. ``start_upload``: the announced size is checked against ``max_upload_bytes``, a pending
   row is recorded and a presigned ``PUT`` URL for ``uploads/<id><suffix>`` is answered; its
   signature covers the size and the SHA-256 (``service.store.presign``).
2. The caller PUTs the file.
3. ``complete_upload``: the object's ``HEAD`` must show the announced size (and SHA-256,
   where S3 keeps it); the object is then streamed into a spool file while hashed (a store
   that checked nothing is caught here) and registered exactly like a streamed upload
   (``catalog.register_model`` or ``register_dataset``: the same inspection, rows and
   errors), except that the blob
   is copied inside the bucket rather than written again. A file that fails inspection is
   refused with the streamed path's error, its object deleted and the upload unknown from
   then on; a file of another size or hash is refused (422 ``upload_mismatch``) and its
   object deleted, so that the right file may still be PUT while the URL lasts.

Rows past ``complete_by`` are unknown to callers and purged by the retention sweep
(``purge_pending``), objects with them; completed and refused rows stay until then, so that
a file PUT again with a URL still valid is deleted too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from starlette.concurrency import run_in_threadpool

from quantcore import QuantError
from service.api.auth import Principal
from service.api.catalog import (
    check_dataset_file,
    check_model_file,
    register_dataset,
    register_model,
)
from service.api.deps import AppContext, found
from service.api.schemas import UploadCreate, UploadPublic
from service.api.uploads import SpooledFile, remove_spool, spool_path
from service.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    UnprocessableError,
)
from service.store.models import new_id
from service.store.presign import MAX_PUT_BYTES, Presigner
from service.store.records import DatasetRecord, ModelRecord, PendingUploadRecord
from service.store.storage import StorageError, check_key, writing
from service.store.uploads import UploadsRepo

log = logging.getLogger("quantserve.presigned")

PURGE_BATCH = 200
R = TypeVar("R", ModelRecord, DatasetRecord)


@dataclass(frozen=True, kw_only=True)
class UploadKind(Generic[R]):
    """What a presigned upload becomes: its pending rows' ``kind``, the streamed route it
    stands in for, and the catalog's check, lookups and registration of that kind."""

    name: str
    streamed_route: str
    check_file: Callable[[str], object]  # raises 415 for a name of another kind
    by_sha256: Callable[[UploadsRepo, str, str], R | None]  # (repo, sha256, team_id)
    by_id: Callable[[UploadsRepo, str, str], R | None]  # (repo, id, team_id)
    register: Callable[[AppContext, Principal, SpooledFile, Callable[[str], None]], Awaitable[R]]


MODEL_UPLOADS = UploadKind[ModelRecord](
    name="model", streamed_route="POST /v1/models", check_file=check_model_file,
    by_sha256=lambda repo, sha256, team: repo.model_by_sha256(sha256, team_id=team),
    by_id=lambda repo, model_id, team: repo.model(model_id, team_id=team),
    register=lambda ctx, principal, upload, place: register_model(ctx, principal, upload,
                                                                  place=place),
)
DATASET_UPLOADS = UploadKind[DatasetRecord](
    name="dataset", streamed_route="POST /v1/datasets", check_file=check_dataset_file,
    by_sha256=lambda repo, sha256, team: repo.dataset_by_sha256(sha256, team_id=team),
    by_id=lambda repo, dataset_id, team: repo.dataset(dataset_id, team_id=team),
    register=lambda ctx, principal, upload, place: register_dataset(ctx, principal, upload,
                                                                    place=place),
)


def _presigner(ctx: AppContext, kind: UploadKind[Any]) -> Presigner:
    if ctx.presigner is None:
        raise ConflictError(
            "presigned uploads need S3 storage (storage=s3); this service keeps its files in "
            f"a local folder: send the file to {kind.streamed_route} instead",
            code="presigned_uploads_unavailable",
        )
    return ctx.presigner


def start_upload(
    ctx: AppContext, principal: Principal, body: UploadCreate, kind: UploadKind[Any]
) -> UploadPublic:
    """A pending upload of a ``kind`` of file and the presigned URL to PUT it to."""
    presigner = _presigner(ctx, kind)
    if "\x00" in body.filename:
        raise BadRequestError("the file name holds a NUL character")
    filename = Path(body.filename.replace("\\", "/")).name
    if not filename:
        raise UnprocessableError(f"filename {body.filename!r} names no file")
    kind.check_file(filename)
    limit = min(ctx.settings.max_upload_bytes, MAX_PUT_BYTES)
    if body.size_bytes > limit:
        why = (
            ""
            if limit == ctx.settings.max_upload_bytes
            else " (a presigned upload is one PUT, which S3 takes up to 5 GiB)"
        )
        raise PayloadTooLargeError(
            f"the upload is {body.size_bytes} bytes; the limit is {limit} bytes{why}",
            details={"limit_bytes": limit},
        )
    upload_id = new_id()
    key = check_key(f"uploads/{upload_id}{Path(filename).suffix.lower()}")
    sha256 = body.sha256.lower()
    row = ctx.pending.add(
        upload_id=upload_id,
        team_id=principal.team_id,
        filename=filename[:300],
        size_bytes=body.size_bytes,
        sha256=sha256,
        storage_key=key,
        ttl_s=ctx.settings.presigned_upload_ttl_s,
        kind=kind.name,
    )
    put = presigner.put_url(
        key, size_bytes=body.size_bytes, sha256=sha256, ttl_s=ctx.settings.presigned_upload_ttl_s
    )
    return UploadPublic(
        id=row.id,
        url=put.url,
        headers=put.headers,
        filename=row.filename,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        expires_at=row.expires_at,
        complete_by=row.complete_by,
    )


def _mismatch(presigner: Presigner, row: PendingUploadRecord, what: str) -> UnprocessableError:
    presigner.storage.delete(row.storage_key)
    return UnprocessableError(
        f"the file PUT to upload {row.id!r} {what}; it was deleted: PUT the announced file "
        "again (while the URL lasts) or start a new upload",
        code="upload_mismatch",
        details={"upload_id": row.id, "size_bytes": row.size_bytes, "sha256": row.sha256},
    )


def _check_head(presigner: Presigner, row: PendingUploadRecord) -> bool:
    """Whether the object is there; 422 if S3 shows another size or SHA-256 than announced."""
    head = presigner.head(row.storage_key)
    if head is None:
        return False
    if head.size_bytes != row.size_bytes:
        raise _mismatch(
            presigner, row, f"is {head.size_bytes} bytes, not the {row.size_bytes} announced"
        )
    if head.sha256 is not None and head.sha256 != row.sha256:
        raise _mismatch(presigner, row, f"has SHA-256 {head.sha256}, not the one announced")
    return True


def _spool(ctx: AppContext, presigner: Presigner, row: PendingUploadRecord) -> SpooledFile:
    """The object streamed into a spool file, hashed on the way (one chunk in memory)."""
    ctx.spool_dir.mkdir(parents=True, exist_ok=True)
    path = spool_path(ctx.spool_dir, row.filename)
    digest, size = hashlib.sha256(), 0
    try:
        with writing("the upload spool"), open(path, "wb") as f:
            for chunk in presigner.storage.iter_bytes(row.storage_key):
                size += len(chunk)
                if size > row.size_bytes:  # grown since its HEAD: read no further
                    break
                digest.update(chunk)
                f.write(chunk)
        if size != row.size_bytes:
            raise _mismatch(presigner, row, f"is not {row.size_bytes} bytes long")
        if digest.hexdigest() != row.sha256:
            raise _mismatch(
                presigner, row, f"has SHA-256 {digest.hexdigest()}, not the one announced"
            )
    except BaseException:
        remove_spool(path)
        raise
    return SpooledFile(
        field="file",
        filename=row.filename,
        suffix=path.suffix,
        path=path,
        size_bytes=size,
        sha256=row.sha256,
    )


def _finish(ctx: AppContext, row: PendingUploadRecord, result: R) -> R:
    ctx.pending.complete(row, result.id)
    try:
        ctx.storage.delete(row.storage_key)
    except StorageError as exc:  # the purge of the row deletes it later
        log.warning("upload object %s left in storage: %s", row.storage_key, exc)
    return result


async def complete_upload(
    ctx: AppContext, principal: Principal, upload_id: str, kind: UploadKind[R]
) -> R:
    """The model (or dataset) of a PUT file: checked, inspected, stored and recorded as if
    streamed."""
    team_id = principal.team_id
    row = await run_in_threadpool(ctx.pending.get, upload_id, team_id=team_id, kind=kind.name)
    if row is None:
        raise NotFoundError(
            f"{kind.name} upload {upload_id!r} not found (unknown, or its time to complete has "
            "passed)",
            details={"upload_id": upload_id},
        )
    if row.result_id is not None:  # completed before: the same answer
        done = await run_in_threadpool(kind.by_id, ctx.uploads, row.result_id, team_id)
        return found(kind.name, row.result_id, done)
    presigner = _presigner(ctx, kind)
    if not await run_in_threadpool(_check_head, presigner, row):
        again = await run_in_threadpool(ctx.pending.get, upload_id, team_id=team_id,
                                        kind=kind.name)
        if again is not None and again.result_id is not None:  # a concurrent complete won
            return await complete_upload(ctx, principal, upload_id, kind)
        raise ConflictError(
            f"nothing has been PUT to upload {upload_id!r} yet: PUT the file to its URL "
            "(with its headers), then complete it",
            code="upload_not_received",
            details={"upload_id": upload_id},
        )
    existing = await run_in_threadpool(kind.by_sha256, ctx.uploads, row.sha256, team_id)
    if existing is not None:  # the same bytes give the same model (or dataset), unread
        return await run_in_threadpool(_finish, ctx, row, existing)
    upload = await run_in_threadpool(_spool, ctx, presigner, row)

    def place(key: str) -> None:
        if not ctx.storage.exists(key):  # content addressed: the same bytes are stored once
            presigner.copy(row.storage_key, key)

    try:
        result = await kind.register(ctx, principal, upload, place)
    except (QuantError, ServiceError) as exc:
        if isinstance(exc, ServiceError) and exc.status_code >= 500:
            raise  # a dependency failed: the upload may be completed again later
        await run_in_threadpool(_discard, ctx, row)
        raise
    finally:
        remove_spool(upload.path)
    return await run_in_threadpool(_finish, ctx, row, result)


def _discard(ctx: AppContext, row: PendingUploadRecord) -> None:
    ctx.pending.refuse(row.id)  # the row stays for the purge: the URL may be used again
    ctx.storage.delete(row.storage_key)


def purge_pending(ctx: AppContext) -> int:
    """Forget uploads whose time to complete has passed, deleting any object left under
    their keys; returns how many went. An object that cannot be deleted keeps its row for
    the next sweep."""
    removed = 0
    while True:
        overdue = ctx.pending.overdue(limit=PURGE_BATCH)
        done = 0
        for row in overdue:
            try:
                ctx.storage.delete(row.storage_key)
            except (StorageError, OSError) as exc:
                log.warning("upload object %s left in storage: %s", row.storage_key, exc)
                continue
            ctx.pending.remove(row.id)
            done += 1
        removed += done
        if len(overdue) < PURGE_BATCH or done == 0:
            return removed
