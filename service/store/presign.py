"""S3's side of presigned transfers: a signed ``PUT`` URL, the object's ``HEAD``, a copy, and
a signed ``GET`` URL for downloads.

The URL signs ``Content-Length`` and ``x-amz-checksum-sha256`` as headers the caller must
send with the values given here, so S3 refuses a body of another size (the signature no
longer matches) or another sha256 (the checksum does not). A single ``PUT`` carries at most
5 GiB (``MAX_PUT_BYTES``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.settings import Settings
from service.store.storage import S3Storage, Storage, StorageError, check_key

MAX_PUT_BYTES = 5 << 30


@dataclass(frozen=True, kw_only=True)
class PresignedPut:
    url: str
    headers: dict[str, str]  # to be sent as they are: the signature covers them


@dataclass(frozen=True, kw_only=True)
class PresignedGet:
    url: str
    expires_at: datetime  # S3 refuses the URL after this


@dataclass(frozen=True, kw_only=True)
class ObjectHead:
    size_bytes: int
    sha256: str | None  # hex; None when the store keeps no SHA-256 checksum of the object


def checksum_header(sha256_hex: str) -> str:
    """S3's form of a SHA-256 checksum: the digest's bytes in base64."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


class Presigner:
    """Presigned uploads into an ``S3Storage``'s bucket, and downloads from it.

    URLs are signed with SigV4 (the only signature that covers headers), by a client for
    ``public_endpoint_url`` when callers reach the store at another address than the API;
    the object's ``HEAD`` and copy go through the storage's own client.
    """

    def __init__(
        self, storage: S3Storage, *, region: str, public_endpoint_url: str | None = None
    ) -> None:
        import boto3
        from botocore.config import Config

        self.storage = storage
        self.signer = boto3.client(
            "s3",
            endpoint_url=public_endpoint_url or storage.client.meta.endpoint_url,
            region_name=region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def put_url(self, key: str, *, size_bytes: int, sha256: str, ttl_s: float) -> PresignedPut:
        """A ``PUT`` URL for exactly these bytes at ``key``, valid ``ttl_s`` seconds."""
        checksum = checksum_header(sha256)
        url = self.signer.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.storage.bucket,
                "Key": check_key(key),
                "ContentLength": size_bytes,
                "ChecksumSHA256": checksum,
            },
            ExpiresIn=max(1, int(ttl_s)),
            HttpMethod="PUT",
        )
        return PresignedPut(
            url=url, headers={"Content-Length": str(size_bytes), "x-amz-checksum-sha256": checksum}
        )

    def get_url(self, key: str, *, filename: str, media_type: str, ttl_s: float) -> PresignedGet:
        """A ``GET`` URL of the object at ``key``, valid ``ttl_s`` seconds (whole, at least
        one), answered by S3 as an attachment named ``filename`` (as the API's own download
        is)."""
        seconds = max(1, int(ttl_s))
        issued = datetime.now(UTC)
        url = self.signer.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.storage.bucket,
                "Key": check_key(key),
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
                "ResponseContentType": media_type,
            },
            ExpiresIn=seconds,
            HttpMethod="GET",
        )
        return PresignedGet(url=str(url), expires_at=issued + timedelta(seconds=seconds))

    def head(self, key: str) -> ObjectHead | None:
        """The object's size and SHA-256 checksum (if S3 keeps one); None if there is none."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.storage.bucket
        try:
            answer = self.storage.client.head_object(
                Bucket=bucket, Key=check_key(key), ChecksumMode="ENABLED"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageError(f"cannot look up {key!r} in {bucket!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot look up {key!r} in {bucket!r}: {exc}") from exc
        checksum = answer.get("ChecksumSHA256")
        sha256 = None
        if checksum and "-" not in checksum:  # "<b64>-<n>": a multipart upload's, not the file's
            sha256 = base64.b64decode(checksum).hex()
        return ObjectHead(size_bytes=int(answer["ContentLength"]), sha256=sha256)

    def copy(self, source: str, target: str) -> None:
        """Copy an object inside the bucket, without its bytes passing through this process."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.storage.bucket
        try:
            self.storage.client.copy(
                {"Bucket": bucket, "Key": check_key(source)}, bucket, check_key(target)
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(
                f"cannot copy {source!r} to {target!r} in {bucket!r}: {exc}"
            ) from exc


def make_presigner(settings: Settings, storage: Storage) -> Presigner | None:
    """The presigner of an S3 storage; None for a local one (no presigned transfers)."""
    if not isinstance(storage, S3Storage):
        return None
    return Presigner(
        storage, region=settings.s3_region, public_endpoint_url=settings.s3_public_endpoint_url
    )
