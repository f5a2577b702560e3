"""``/v1/datasets``: upload an evaluation set (``.npz``) and read it."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from service.api.catalog import check_dataset_file, register_dataset
from service.api.deps import CtxDep, DatasetDep, PrincipalDep
from service.api.routers.common import dataset_public, errors, upload_body
from service.api.schemas import DatasetPublic
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


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=errors(401, 404, 429),
            summary="An evaluation set")
def get_dataset(dataset: DatasetDep) -> DatasetPublic:
    return dataset_public(dataset)
