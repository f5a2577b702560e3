"""``/v1/models``: upload a model (streamed, hashed, inspected, deduplicated, or presigned:
PUT straight to S3 and then completed) and read it."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from service.api.catalog import check_model_file, register_model
from service.api.deps import CtxDep, ModelDep, PrincipalDep
from service.api.presigned import MODEL_UPLOADS, complete_upload, start_upload
from service.api.routers.common import errors, model_public, upload_body
from service.api.schemas import ModelPublic, UploadCreate, UploadPublic
from service.api.uploads import read_multipart
from service.errors import UnprocessableError

router = APIRouter(prefix="/v1/models", tags=["models"])

UPLOAD_BODY = upload_body("An .onnx, .safetensors or .npz file.")
UPLOAD_BODY["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"][
    "external_data"
] = {
    "type": "string",
    "format": "binary",
    "description": "With an .onnx model whose tensors are stored outside it (models over "
    "2 GB): the one external data file they name. It is stored with the model and placed "
    "under the name the model gives it when a job runs.",
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelPublic,
    responses=errors(400, 401, 413, 415, 422, 429, 507),
    openapi_extra=UPLOAD_BODY,
    summary="Upload a model",
)
async def upload_model(request: Request, ctx: CtxDep, principal: PrincipalDep) -> ModelPublic:
    """Stream the file (and its external data, if any) to storage while hashing it; the same
    bytes give the same model."""
    def check_file(field: str, filename: str) -> None:
        if field == "file":
            check_model_file(filename)

    form = await read_multipart(request, spool_dir=ctx.spool_dir,
                                max_bytes=ctx.settings.max_upload_bytes,
                                file_fields=frozenset({"file", "external_data"}),
                                check_file=check_file)  # fmt: skip
    try:
        upload = form.files.get("file")
        if upload is None:
            raise UnprocessableError("multipart field 'file' is required (the model file)")
        external = form.files.get("external_data")
        return model_public(await register_model(ctx, principal, upload, external))
    finally:
        form.cleanup()


@router.post(
    "/uploads",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadPublic,
    responses=errors(400, 401, 409, 413, 415, 422, 429),
    summary="Start a presigned upload (S3 storage)",
)
def start_presigned_upload(body: UploadCreate, ctx: CtxDep,
                           principal: PrincipalDep) -> UploadPublic:
    """Announce a model file by name, size and SHA-256; the answer is a URL to PUT it to
    (straight to S3, with the headers given), then complete the upload. 409
    `presigned_uploads_unavailable` when the service keeps its files locally."""
    return start_upload(ctx, principal, body, MODEL_UPLOADS)


@router.post(
    "/uploads/{upload_id}/complete",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelPublic,
    responses=errors(401, 404, 409, 413, 422, 429, 507),
    summary="Complete a presigned upload",
)
async def complete_presigned_upload(upload_id: str, ctx: CtxDep,
                                    principal: PrincipalDep) -> ModelPublic:
    """Check the PUT file against its announced size and SHA-256 and inspect it: the model,
    as `POST /v1/models` would have made it (completing again gives the same model). 409
    `upload_not_received` before the PUT; 422 `upload_mismatch` for another file; a file
    that fails inspection gets the upload's error, and the upload is gone."""
    return model_public(await complete_upload(ctx, principal, upload_id, MODEL_UPLOADS))


@router.get("/{model_id}", response_model=ModelPublic, responses=errors(401, 404, 429),
            summary="A model")
def get_model(model: ModelDep) -> ModelPublic:
    return model_public(model)
