"""``/v1/models``: upload a model (streamed, hashed, inspected, deduplicated) and read it."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from service.api.catalog import check_model_file, register_model
from service.api.deps import CtxDep, ModelDep, PrincipalDep
from service.api.routers.common import errors, model_public, upload_body
from service.api.schemas import ModelPublic
from service.api.uploads import single_upload

router = APIRouter(prefix="/v1/models", tags=["models"])

UPLOAD_BODY = upload_body("An .onnx, .safetensors or .npz file.")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelPublic,
    responses=errors(400, 401, 413, 415, 422, 429, 507),
    openapi_extra=UPLOAD_BODY,
    summary="Upload a model",
)
async def upload_model(request: Request, ctx: CtxDep, principal: PrincipalDep) -> ModelPublic:
    """Stream the file to storage while hashing it; the same bytes give the same model."""
    async with single_upload(request, spool_dir=ctx.spool_dir,
                             max_bytes=ctx.settings.max_upload_bytes,
                             check=check_model_file, what="the model file") as upload:
        return model_public(await register_model(ctx, principal, upload))


@router.get("/{model_id}", response_model=ModelPublic, responses=errors(401, 404, 429),
            summary="A model")
def get_model(model: ModelDep) -> ModelPublic:
    return model_public(model)
