"""Presigned artifact downloads: a signed ``GET`` URL straight to the S3 store.

With many workers and large models the API should not carry every artifact's bytes: a caller
asks ``GET /v1/jobs/{id}/artifacts/{name}/url`` (authenticated as any other read) and fetches
the file from the store with that URL, which needs no API key and expires after
``presigned_download_ttl_s``. The URL is signed for ``s3_public_endpoint_url`` when callers
reach the store at another address than the API. A service that keeps its files locally has
no such URL (409 ``presigned_downloads_unavailable``): the API's own download serves them.
"""

from __future__ import annotations

from service.api.deps import AppContext
from service.api.schemas import ArtifactLinkPublic
from service.errors import ConflictError
from service.store.records import ArtifactRecord


def artifact_link(ctx: AppContext, artifact: ArtifactRecord) -> ArtifactLinkPublic:
    """The presigned download of ``artifact`` (module docstring)."""
    if ctx.presigner is None:
        raise ConflictError(
            "presigned downloads need S3 storage (storage=s3); this service keeps its files "
            f"in a local folder: GET /v1/jobs/{{id}}/artifacts/{artifact.name} serves them",
            code="presigned_downloads_unavailable",
        )
    link = ctx.presigner.get_url(artifact.storage_key, filename=artifact.name,
                                 media_type=artifact.media_type,
                                 ttl_s=ctx.settings.presigned_download_ttl_s)
    return ArtifactLinkPublic(
        name=artifact.name, url=link.url, size_bytes=artifact.size_bytes,
        sha256=artifact.sha256, media_type=artifact.media_type, expires_at=link.expires_at,
    )
