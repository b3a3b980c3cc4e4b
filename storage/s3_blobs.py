"""The blob store in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), through obstore.

Workers on several machines then share photos, LoRAs and portraits without a shared file system.
Every call is synchronous, like :class:`storage.blobs.LocalBlobStore`'s: obstore runs the request on
its own runtime and blocks only the calling thread (the worker's stage thread, or the bot's
``asyncio.to_thread``), so no event loop is ever blocked or shared.

An S3 ``PUT`` (and a multipart upload, completed) replaces an object atomically, so a reader sees the
old blob or the new one. :meth:`S3BlobStore.path` hands out a file of a local, bounded read-through
cache (:class:`storage.blob_cache.BlobCache`), checked against the object's ETag on every call.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import obstore
from obstore.store import S3Store

from storage.blob_cache import BlobCache
from storage.blob_config import DEFAULT_RETRY_TIMEOUT_S
from storage.blobs import BlobNotFound, BlobStore, InvalidBlobKey, validate_key, validate_prefix
from storage.images import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

#: How many keys one delete request carries (S3 allows 1000).
_DELETE_BATCH = 1000
_CHUNK = 1024 * 1024


class S3BlobStore(BlobStore):
    """Blobs under ``prefix`` in one bucket; credentials from the arguments, else the usual AWS_* chain."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        cache: BlobCache,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        retry_timeout_s: float = DEFAULT_RETRY_TIMEOUT_S,
    ) -> None:
        super().__init__(max_pixels=max_pixels)
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._endpoint_url = endpoint_url
        self._cache = cache
        client: ClientConfig = {
            "allow_http": bool(endpoint_url and endpoint_url.startswith("http://")),
            "connect_timeout": timedelta(seconds=min(10.0, retry_timeout_s)),
        }
        retry: RetryConfig = {"retry_timeout": timedelta(seconds=retry_timeout_s)}
        # What is not given here, obstore takes from the AWS_* environment (or the instance role).
        config: S3Config = {}
        if endpoint_url:
            config["endpoint"] = endpoint_url
        if region:
            config["region"] = region
        if access_key_id is not None and secret_access_key is not None:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        self._store = S3Store(
            bucket, prefix=self._prefix or None, config=config, client_options=client, retry_config=retry
        )

    @property
    def location(self) -> str:
        where = f"s3://{self._bucket}/{self._prefix}".rstrip("/")
        return where + (f" at {self._endpoint_url}" if self._endpoint_url else "")

    @property
    def cache(self) -> BlobCache:
        return self._cache

    # ------------------------------------------------------------------------------------ reads
    def _version(self, key: str) -> tuple[str, int]:
        """(ETag, size) of a stored blob; raises :class:`BlobNotFound`."""
        try:
            meta = obstore.head(self._store, key)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return str(meta["e_tag"] or meta["last_modified"]), int(meta["size"])

    def exists(self, key: str) -> bool:
        try:
            self._version(validate_key(key))
        except BlobNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return self._version(validate_key(key))[1]

    def get_bytes(self, key: str) -> bytes:
        validate_key(key)
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def path(self, key: str) -> Path:
        validate_key(key)
        version, _ = self._version(key)
        cached = self._cache.lookup(key, version)
        if cached is not None:
            return cached
        try:
            result = obstore.get(self._store, key)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        # Named by the version actually downloaded (the blob may have been replaced since the HEAD).
        downloaded = str(result.meta["e_tag"] or result.meta["last_modified"])

        def write(target: BinaryIO) -> None:
            for chunk in result.stream(min_chunk_size=_CHUNK):
                target.write(chunk)

        return self._cache.store(key, downloaded, write)

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for key in _object_names(self._store, validate_prefix(prefix, allow_root=True)):
            try:
                keys.append(validate_key(key))
            except InvalidBlobKey:
                continue  # an object no key can name (written by something else)
        return sorted(keys)

    # ----------------------------------------------------------------------------------- writes
    def put_bytes(self, key: str, data: bytes) -> None:
        obstore.put(self._store, validate_key(key), data)

    def put_file(self, key: str, src: Path) -> None:
        validate_key(key)
        with src.open("rb") as source:
            obstore.put(self._store, key, source)

    # ---------------------------------------------------------------------------------- deletes
    def delete(self, key: str) -> bool:
        if not self.exists(key):
            return False
        obstore.delete(self._store, key)
        return True

    def delete_prefix(self, prefix: str) -> int:
        # Every object under the prefix goes, also those no key names: /forget leaves nothing behind.
        keys = _object_names(self._store, validate_prefix(prefix, allow_root=False))
        for start in range(0, len(keys), _DELETE_BATCH):
            obstore.delete(self._store, keys[start : start + _DELETE_BATCH])
        return len(keys)


def _object_names(store: S3Store, prefix: str) -> list[str]:
    """Every object name under the folder ``prefix`` (object store prefixes are folder-aligned)."""
    return [meta["path"] for chunk in obstore.list(store, prefix=prefix or None) for meta in chunk]
