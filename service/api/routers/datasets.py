"""``/v1/datasets``: upload an evaluation set (``.npz``), streamed or presigned (straight to
S3), and read it."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from service.api.catalog import check_dataset_file, register_dataset
from service.api.deps import CtxDep, DatasetDep, PrincipalDep
from service.api.presigned import DATASET_UPLOADS, complete_upload, start_upload
from service.api.routers.common import dataset_public, errors, upload_body
from service.api.schemas import DatasetPublic, UploadCreate, UploadPublic
from service.api.uploads import single_upload

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_BODY = upload_body("An .npz evaluation set.")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses=errors(400, 401, 413, 415, 422, 429, 507),
    openapi_extra=UPLOAD_BODY,
    summary="Upload an evaluation set",
)
async def upload_dataset(
    request: Request, ctx: CtxDep, principal: PrincipalDep
) -> DatasetPublic:
    async with single_upload(request, spool_dir=ctx.spool_dir,
                             max_bytes=ctx.settings.max_upload_bytes,
                             check=check_dataset_file, what="the .npz file") as upload:
        return dataset_public(await register_dataset(ctx, principal, upload))


@router.post(
    "/uploads",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadPublic,
    responses=errors(400, 401, 409, 413, 415, 422, 429),
    summary="Start a presigned upload of an evaluation set (S3 storage)",
)
def start_presigned_upload(body: UploadCreate, ctx: CtxDep,
                           principal: PrincipalDep) -> UploadPublic:
    """Announce an .npz file by name, size and SHA-256; the answer is a URL to PUT it to
    (straight to S3, with the headers given), then complete the upload, as for models. 409
    `presigned_uploads_unavailable` when the service keeps its files locally."""
    return start_upload(ctx, principal, body, DATASET_UPLOADS)


@router.post(
    "/uploads/{upload_id}/complete",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses=errors(401, 404, 409, 413, 422, 429, 507),
    summary="Complete a presigned upload of an evaluation set",
)
async def complete_presigned_upload(upload_id: str, ctx: CtxDep,
                                    principal: PrincipalDep) -> DatasetPublic:
    """Check the PUT file against its announced size and SHA-256 and inspect it: the
    dataset, as `POST /v1/datasets` would have made it (completing again gives the same
    one). Errors as for a model's presigned upload."""
    return dataset_public(await complete_upload(ctx, principal, upload_id, DATASET_UPLOADS))


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=errors(401, 404, 429),
            summary="An evaluation set")
def get_dataset(dataset: DatasetDep) -> DatasetPublic:
    return dataset_public(dataset)
