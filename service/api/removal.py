"""Deleting jobs, models and datasets with their files, and the retention sweep.

The store deletes the rows and names the storage keys they held (``service.store.removal``);
the files are deleted afterwards. A file that cannot be deleted (storage down) is logged and
left: nothing refers to it any more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from service.api.deps import AppContext
from service.api.presigned import purge_pending
from service.errors import ServiceError
from service.store.artifacts import external_key
from service.store.models import utcnow
from service.store.storage import StorageError

log = logging.getLogger("quantserve.removal")

SWEEP_BATCH = 200


def _delete_files(ctx: AppContext, keys: Iterable[str | None]) -> None:
    for key in keys:
        if key is None:
            continue
        try:
            ctx.storage.delete(key)
        except (StorageError, OSError) as exc:
            log.warning("file %s left in storage: %s", key, exc)


def remove_job(ctx: AppContext, job_id: str, *, team_id: str) -> None:
    """Delete a final job and its artifacts (409 ``job_not_finished`` while it is active)."""
    _delete_files(ctx, ctx.removal.delete_job(job_id, team_id=team_id))


def remove_model(ctx: AppContext, model_id: str, *, team_id: str) -> None:
    """Delete a model no job uses (409 ``resource_in_use`` otherwise) and its unshared file
    (with its external data file, if it has one)."""
    _delete_files(ctx, _with_external(ctx.removal.delete_model(model_id, team_id=team_id)))


def _with_external(key: str | None) -> list[str | None]:
    return [key] if key is None or not key.endswith(".onnx") else [key, external_key(key)]


def remove_dataset(ctx: AppContext, dataset_id: str, *, team_id: str) -> None:
    _delete_files(ctx, [ctx.removal.delete_dataset(dataset_id, team_id=team_id)])


def sweep_retention(ctx: AppContext) -> dict[str, int]:
    """Delete what is older than ``retention_days`` (nothing when it is 0); also ends
    expired portal sessions and forgets presigned uploads not completed in time (with their
    objects). Returns how many of each kind went."""
    removed = {"job": 0, "model": 0, "dataset": 0,
               "session": ctx.sessions.purge_expired(), "pending_upload": purge_pending(ctx)}
    days = ctx.settings.retention_days
    if days <= 0:
        return removed
    before = utcnow() - timedelta(days=days)
    remover = {"job": remove_job, "model": remove_model, "dataset": remove_dataset}
    while True:
        expired = ctx.removal.expired(before, limit=SWEEP_BATCH)
        done = 0
        for item in expired:
            try:
                remover[item.what](ctx, item.id, team_id=item.team_id)
            except ServiceError as exc:  # used again, or removed by another sweep, meanwhile
                log.info("retention kept %s %s: %s", item.what, item.id, exc.message)
                continue
            removed[item.what] += 1
            done += 1
        if not done or len(expired) < SWEEP_BATCH:
            break
    if any(removed.values()):
        log.info("retention sweep", extra={"removed": removed, "days": days})
    return removed
