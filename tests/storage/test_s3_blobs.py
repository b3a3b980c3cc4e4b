"""What only the S3 backend does: its local read-through cache (bounded, atomic, never stale), the
objects it shares with other clients, and its settings. Against a real S3 server (moto)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pytest
from pydantic import ValidationError

from bot.config import BotSettings
from bot.settings_loader import describe
from pipeline.config import WorkerSettings
from storage.blob_cache import BlobCache
from storage.blob_config import open_blob_store
from storage.s3_blobs import S3BlobStore
from tests.s3_server import SECRET_KEY, S3Bucket, s3_bucket, s3_endpoint

__all__ = ["s3_bucket", "s3_endpoint"]

MB = 1024 * 1024


def s3_store(bucket: S3Bucket, tmp_path: Path, *, cache_mb: int = 64, keep_recent_s: float = 0.0) -> S3BlobStore:
    """The bucket's store with a cache whose bound and grace the test chooses."""
    settings = bucket.settings()
    return S3BlobStore(
        bucket.name, prefix=bucket.prefix, endpoint_url=bucket.endpoint, region=settings["s3_region"],
        access_key_id=settings["s3_access_key_id"], secret_access_key=settings["s3_secret_access_key"],
        cache=BlobCache(tmp_path / "cache", max_bytes=cache_mb * MB, keep_recent_s=keep_recent_s),
    )  # fmt: skip


def cached_files(store: S3BlobStore) -> list[Path]:
    return sorted(p for p in store.cache.root.rglob("*") if p.is_file())


def test_blobs_live_in_the_bucket_under_the_prefix(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_store(s3_bucket, tmp_path)
    store.put_bytes("users/1/photos/a.jpg", b"1")
    assert s3_bucket.object_names() == ["facechain/users/1/photos/a.jpg"]
    assert not (tmp_path / "data" / "blobs").exists(), "nothing is written to a local blob folder"


def test_path_reuses_the_cached_copy_until_the_blob_changes(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_store(s3_bucket, tmp_path)
    store.put_bytes("runs/r1/face_lora.safetensors", b"version one")
    first = store.path("runs/r1/face_lora.safetensors")
    assert first.is_relative_to(tmp_path / "cache") and first.read_bytes() == b"version one"
    assert first.stat().st_mode & 0o777 == 0o600 and first.parent.stat().st_mode & 0o777 == 0o700, "private copies"
    assert store.path("runs/r1/face_lora.safetensors") == first, "a second read uses the same copy"

    store.put_bytes("runs/r1/face_lora.safetensors", b"version two")
    second = store.path("runs/r1/face_lora.safetensors")
    assert second != first and second.read_bytes() == b"version two"
    assert cached_files(store) == [second], "the old version's copy is gone"


def test_the_cache_stays_within_its_bound_dropping_the_least_recently_used(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_store(s3_bucket, tmp_path, cache_mb=16)
    for n in range(5):
        store.put_bytes(f"communities/1/styles/s{n}.safetensors", bytes([n]) * 6 * MB)
    store.path("communities/1/styles/s0.safetensors")
    for n in range(1, 5):
        path = store.path(f"communities/1/styles/s{n}.safetensors")
        assert path.read_bytes() == bytes([n]) * 6 * MB
        assert store.cache.size() <= 16 * MB
    assert [p.name for p in cached_files(store)] == ["s3.safetensors", "s4.safetensors"]
    # An evicted blob is simply fetched again.
    assert store.path("communities/1/styles/s0.safetensors").read_bytes() == bytes([0]) * 6 * MB


def test_a_copy_in_use_is_kept_even_past_the_bound(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_store(s3_bucket, tmp_path, cache_mb=16, keep_recent_s=3600)
    for n in range(3):
        store.put_bytes(f"runs/r{n}/face_lora.safetensors", bytes([n]) * 6 * MB)
        store.path(f"runs/r{n}/face_lora.safetensors")
    assert len(cached_files(store)) == 3, "a job may be about to open a copy used a moment ago"


def test_a_fill_that_fails_halfway_leaves_no_file(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes=MB)

    def half_then_fail(target: BinaryIO) -> None:
        target.write(b"x" * 1000)
        raise ConnectionResetError("the connection dropped")

    with pytest.raises(ConnectionResetError):
        cache.store("runs/r1/face_lora.safetensors", '"etag1"', half_then_fail)
    assert cache.lookup("runs/r1/face_lora.safetensors", '"etag1"') is None
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_delete_prefix_removes_objects_that_no_key_names(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    import obstore

    store = s3_store(s3_bucket, tmp_path)
    store.put_bytes("users/7/photos/a.jpg", b"a")
    obstore.put(store._store, "users/7/photos/.DS_Store", b"written by another tool")
    assert store.list("users/7") == ["users/7/photos/a.jpg"]
    store.delete_prefix("users/7")
    assert s3_bucket.object_names() == [], "/forget leaves nothing of the user in the bucket"


def test_the_blob_url_is_one_setting_of_both_processes(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    for settings_class in (BotSettings, WorkerSettings):
        settings = settings_class(_env_file=None, data_dir=tmp_path, **s3_bucket.settings())  # type: ignore[call-arg]
        store = open_blob_store(settings, settings.data_dir)
        assert isinstance(store, S3BlobStore)
        assert store.cache.root == tmp_path / "blob-cache"
        assert SECRET_KEY not in repr(settings) and SECRET_KEY not in store.location
    default = WorkerSettings(_env_file=None, data_dir=tmp_path)
    assert open_blob_store(default, default.data_dir).location == f"local folder {tmp_path / 'blobs'}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://bucket/x", "expected s3://bucket"),
        ("s3://Upper_Case", "bucket name"),
        ("s3://bucket/../etc", "prefix"),
        ("s3://key:secret@bucket/x", "credentials go in FACECHAIN_S3_"),
    ],
)
def test_a_bad_blob_url_is_a_clear_settings_error(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        WorkerSettings(_env_file=None, blob_url=value)
    line = describe(caught.value)
    assert line.startswith("setting FACECHAIN_BLOB_URL: ") and message in line
    assert ":secret@" not in line, "the value itself is never echoed"


def test_credentials_come_in_pairs() -> None:
    with pytest.raises(ValidationError, match="set both FACECHAIN_S3_ACCESS_KEY_ID and"):
        BotSettings(_env_file=None, s3_access_key_id="AKIA")  # type: ignore[call-arg]
