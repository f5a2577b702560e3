"""``/v1/models``: upload a model (streamed, hashed, inspected, deduplicated) and read it."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from service.catalog import check_model_file, register_model
from service.deps import CtxDep, ModelDep, PrincipalDep
from service.errors import UnprocessableError
from service.routers.common import errors, model_public
from service.schemas import ModelPublic
from service.uploads import read_multipart

router = APIRouter(prefix="/v1/models", tags=["models"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "An .onnx, .safetensors or .npz file."},
                    },
                }
            }
        },
    }
}


def _check_file(_field: str, filename: str) -> None:
    check_model_file(filename)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelPublic,
    responses=errors(400, 401, 413, 415, 422, 429),
    openapi_extra=UPLOAD_BODY,
    summary="Upload a model",
)
async def upload_model(request: Request, ctx: CtxDep, principal: PrincipalDep) -> ModelPublic:
    """Stream the file to storage while hashing it; the same bytes give the same model."""
    form = await read_multipart(request, spool_dir=ctx.spool_dir,
                                max_bytes=ctx.settings.max_upload_bytes,
                                file_fields=frozenset({"file"}),
                                check_file=_check_file)
    try:
        upload = form.files.get("file")
        if upload is None:
            raise UnprocessableError("multipart field 'file' is required (the model file)")
        return model_public(await register_model(ctx, principal, upload))
    finally:
        form.cleanup()


@router.get("/{model_id}", response_model=ModelPublic, responses=errors(401, 404, 429),
            summary="A model")
def get_model(model: ModelDep) -> ModelPublic:
    return model_public(model)
