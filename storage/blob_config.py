"""Which blob store a process uses: the settings both processes share, and the one factory.

``FACECHAIN_BLOB_URL`` unset: a local folder, ``FACECHAIN_DATA_DIR/blobs`` (one machine, or a shared
volume). ``FACECHAIN_BLOB_URL=s3://bucket/prefix``: an S3-compatible bucket that workers on other
machines reach too; ``FACECHAIN_S3_*`` say where and with which credentials (unset credentials: the
usual AWS_* environment variables or the machine's instance role), and ``FACECHAIN_BLOB_CACHE_*``
bound the local copies that model loaders read.

:class:`BlobStoreSettings` is mixed into both settings classes (``bot.config.BotSettings`` and
``pipeline.config.WorkerSettings``), so each of these settings is declared once.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr, ValidationInfo, field_validator

from storage.blobs import BlobStore, InvalidBlobKey, LocalBlobStore, validate_key

#: S3's bucket naming rules (lower case, digits, dots and hyphens; 3-63 characters).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MB = 1024 * 1024
#: How long a remote store retries a failing request (with backoff) before raising. obstore's own
#: default is 3 minutes; a job or ``doctor`` should learn sooner that the store is unreachable.
DEFAULT_RETRY_TIMEOUT_S = 60.0


def local_blob_dir(data_dir: Path) -> Path:
    """The local backend's folder under the data directory."""
    return data_dir / "blobs"


def parse_blob_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix); raises ValueError with what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError("expected s3://bucket or s3://bucket/prefix (unset = a local folder under FACECHAIN_DATA_DIR)")
    if parts.query or parts.fragment or parts.username or parts.password or parts.port:
        raise ValueError("an s3:// URL carries only a bucket and a prefix (credentials go in FACECHAIN_S3_*)")
    if not _BUCKET.fullmatch(parts.hostname or ""):
        raise ValueError("the bucket name must be 3-63 lower-case letters, digits, dots or hyphens")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except InvalidBlobKey:
            raise ValueError("the prefix must be /-separated names of letters, digits, '_', '.', '=' or '-'") from None
    return parts.hostname or "", prefix


class BlobStoreSettings(BaseModel):
    """Blob store settings (``FACECHAIN_BLOB_*``, ``FACECHAIN_S3_*``), mixed into each process's settings."""

    blob_url: str | None = Field(
        default=None, description="s3://bucket/prefix for an S3-compatible bucket; unset = DATA_DIR/blobs."
    )
    s3_endpoint_url: AnyHttpUrl | None = Field(
        default=None, description="S3 endpoint (MinIO, Ceph, R2, ...); unset = AWS in s3_region."
    )
    s3_region: str = Field(default="us-east-1", min_length=1)
    s3_access_key_id: str | None = Field(default=None, description="Unset = AWS_* variables or the instance role.")
    s3_secret_access_key: SecretStr | None = Field(default=None, validate_default=True)
    blob_cache_dir: Path | None = Field(
        default=None, description="Local copies of remote blobs; unset = DATA_DIR/blob-cache."
    )
    blob_cache_mb: int = Field(default=2048, ge=16, description="Bound of the local copies, in MB.")

    @field_validator("blob_url")
    @classmethod
    def _check_blob_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_blob_url(value)
        return value

    @field_validator("s3_secret_access_key")
    @classmethod
    def _check_credentials(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (info.data.get("s3_access_key_id") is None) != (value is None):
            raise ValueError(
                "set both FACECHAIN_S3_ACCESS_KEY_ID and FACECHAIN_S3_SECRET_ACCESS_KEY, or neither "
                "(then the AWS_* variables or the instance role are used)"
            )
        return value


def open_blob_store(
    settings: BlobStoreSettings, data_dir: Path, *, retry_timeout_s: float = DEFAULT_RETRY_TIMEOUT_S
) -> BlobStore:
    """The blob store the settings choose (a local folder unless ``blob_url`` is set).

    ``retry_timeout_s``: how long a remote store retries a failing request before raising.
    """
    if settings.blob_url is None:
        return LocalBlobStore(local_blob_dir(data_dir))
    from storage.blob_cache import BlobCache
    from storage.s3_blobs import S3BlobStore

    bucket, prefix = parse_blob_url(settings.blob_url)
    cache = BlobCache(settings.blob_cache_dir or data_dir / "blob-cache", max_bytes=settings.blob_cache_mb * _MB)
    secret = settings.s3_secret_access_key
    return S3BlobStore(
        bucket,
        prefix=prefix,
        cache=cache,
        endpoint_url=str(settings.s3_endpoint_url).rstrip("/") if settings.s3_endpoint_url else None,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        retry_timeout_s=retry_timeout_s,
    )
