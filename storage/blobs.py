"""The blob store: bytes addressed by keys such as ``users/12/photos/abc.jpg``.

:class:`BlobStore` is the interface, defined once; :class:`LocalBlobStore` keeps blobs in a folder
(the default) and :class:`storage.s3_blobs.S3BlobStore` in an S3-compatible bucket, for workers on
several machines (``FACECHAIN_BLOB_URL``, see :mod:`storage.blob_config`). One contract test suite
runs against both (tests/storage/test_blob_contract.py).

Synchronous on purpose: the GPU worker calls it from its stage thread and the bot through
``asyncio.to_thread``. This module imports only the standard library and Pillow, so the worker can
use it without the database stack.

Keys are relative, ``/``-separated paths whose segments start with a letter, digit or ``_`` and
continue with ``[A-Za-z0-9_.=-]`` (the same rule as ``pipeline.jobs``), so ``..``, hidden files,
absolute paths and backslashes can never name a blob. Writes are atomic: a reader sees the old
blob or the new one, never part of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage.files import FILE_MODE, make_private_dirs, remove_empty_folders, restrict, write_atomically
from storage.images import DEFAULT_MAX_PIXELS, clean_photo
from storage.images import NotAnImage as NotAnImage  # raised by put_photo; callers catch it from here

MAX_KEY_LENGTH = 512
#: Leaves room under the usual 255-byte file name limit for the temporary name of a write.
MAX_SEGMENT_LENGTH = 200
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=-]*")
_TEMP_PREFIX = ".tmp-"
_CHUNK = 1024 * 1024
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class InvalidBlobKey(ValueError):
    """A key that is malformed, or that would resolve outside the store's root."""


class BlobNotFound(FileNotFoundError):
    """No blob is stored under this key."""


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    """A photo as :meth:`BlobStore.put_photo` stored it."""

    #: The key it was stored under (its suffix follows the stored format).
    key: str
    #: SHA-256 of the bytes as uploaded (hex), for duplicate detection.
    sha256: str
    width: int
    height: int
    mime: str
    #: Size in bytes of the stored (cleaned) file.
    size: int


def validate_key(key: str) -> str:
    """Return ``key`` if it is a well-formed blob key, else raise :class:`InvalidBlobKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidBlobKey("blob key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidBlobKey(f"blob key longer than {MAX_KEY_LENGTH} characters")
    if "\\" in key:
        raise InvalidBlobKey(f"blob key contains a backslash: {key[:80]!r}")
    if key.startswith("/"):
        raise InvalidBlobKey(f"blob key must be relative: {key[:80]!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidBlobKey(f"blob key has an empty, '.' or '..' segment: {key[:80]!r}")
        if len(segment) > MAX_SEGMENT_LENGTH or not _SEGMENT.fullmatch(segment):
            raise InvalidBlobKey(f"blob key has an invalid segment {segment[:40]!r}")
    return key


def validate_prefix(prefix: str, *, allow_root: bool) -> str:
    """A prefix is a key naming a folder; one trailing ``/`` is accepted and removed. ``""`` is the whole store."""
    bare = prefix[:-1] if prefix.endswith("/") else prefix
    if bare == "" and allow_root:
        return ""
    return validate_key(bare)


class BlobStore(ABC):
    """The blob store's interface. Every backend passes the same contract tests.

    Implementations are safe for several threads and processes writing distinct keys; every method
    validates its key (:func:`validate_key`) before touching storage.
    """

    def __init__(self, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._max_pixels = max_pixels

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the blobs are, for logs and ``doctor`` (never a credential)."""

    @abstractmethod
    def path(self, key: str) -> Path:
        """A local file path holding the blob, for readers that need one (diffusers, peft).

        Read it, never write to it. A remote backend returns a file of its local read-through cache.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes of a stored blob (raises :class:`BlobNotFound`)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any blob there, atomically."""

    @abstractmethod
    def put_file(self, key: str, src: Path) -> None:
        """Copy the file ``src`` into the store under ``key``, atomically."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The content of a stored blob (raises :class:`BlobNotFound`)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys of the blobs under the folder ``prefix`` (e.g. ``users/12``, not ``users/1``), sorted."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete one blob; False when there was none."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under the folder ``prefix``; returns how many. The root is refused."""

    def put_photo(self, key: str, data: bytes) -> StoredPhoto:
        """Store an uploaded photo upright, in 8-bit sRGB, cleaned of metadata, and say what it is.

        See :func:`storage.images.clean_photo` (anything that does not fully decode as JPEG, PNG or
        WebP within the pixel limit raises :class:`NotAnImage`). The stored key's suffix is set to
        the stored format (``.jpg``, ``.png`` or ``.webp``): use the returned :attr:`StoredPhoto.key`.
        """
        validate_key(key)
        cleaned = clean_photo(data, self._max_pixels)
        stored_key = _with_suffix(key, cleaned.suffix)
        self.put_bytes(stored_key, cleaned.data)
        return StoredPhoto(
            key=stored_key,
            sha256=hashlib.sha256(data).hexdigest(),
            width=cleaned.width,
            height=cleaned.height,
            mime=cleaned.mime,
            size=len(cleaned.data),
        )


class LocalBlobStore(BlobStore):
    """Blobs under one root directory (the default backend)."""

    def __init__(self, root: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, file_mode: int = FILE_MODE) -> None:
        """Create the root (0700) if needed. ``file_mode`` applies to every blob written (photos are private)."""
        super().__init__(max_pixels=max_pixels)
        make_private_dirs(root)
        restrict(root)
        self._root = root.resolve(strict=True)
        self._file_mode = file_mode

    @property
    def root(self) -> Path:
        return self._root

    @property
    def location(self) -> str:
        return f"local folder {self._root}"

    # ------------------------------------------------------------------------------------ paths
    def _resolve(self, key: str) -> Path:
        candidate = self._root.joinpath(*key.split("/")) if key else self._root
        # resolve() follows every symlink on the way, existing or not: the real location must
        # still be inside the root, or a link planted in the store could leak or clobber files.
        if not candidate.resolve().is_relative_to(self._root):
            raise InvalidBlobKey(f"blob key {key[:80]!r} resolves outside the store")
        return candidate

    def path(self, key: str) -> Path:
        """Filesystem path of an existing blob, for readers that need one (do not write to it)."""
        path = self._resolve(validate_key(key))
        if not path.is_file():
            raise BlobNotFound(key)
        return path

    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""
        return self._resolve(validate_key(key)).is_file()

    def size(self, key: str) -> int:
        """Size in bytes of a stored blob."""
        return self.path(key).stat().st_size

    # ----------------------------------------------------------------------------------- writes
    def _write_atomic(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        target = self._resolve(validate_key(key))
        make_private_dirs(target.parent)
        write_atomically(target, write, temp_dir=target.parent, temp_prefix=_TEMP_PREFIX, mode=self._file_mode)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any blob there, atomically."""
        self._write_atomic(key, lambda f: f.write(data))

    def put_file(self, key: str, src: Path) -> None:
        """Copy the file ``src`` into the store under ``key``, atomically."""
        with src.open("rb") as source:
            self._write_atomic(key, lambda f: shutil.copyfileobj(source, f, _CHUNK))

    # ------------------------------------------------------------------------------------ reads
    def get_bytes(self, key: str) -> bytes:
        """The content of a stored blob (raises :class:`BlobNotFound`)."""
        path = self._resolve(validate_key(key))
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None

    def list(self, prefix: str = "") -> list[str]:
        """Keys of the blobs under ``prefix`` (a folder, e.g. ``users/12``), sorted."""
        prefix = validate_prefix(prefix, allow_root=True)
        base = self._resolve(prefix)
        if not base.is_dir():
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            # Never descend into folders whose names no key can have.
            dirnames[:] = [d for d in dirnames if _SEGMENT.fullmatch(d)]
            rel = Path(dirpath).relative_to(self._root).as_posix()
            for name in filenames:
                if not _SEGMENT.fullmatch(name):
                    continue  # temp files of writes in progress, foreign files
                key = name if rel == "." else f"{rel}/{name}"
                with contextlib.suppress(InvalidBlobKey):
                    if self._resolve(key).is_file():
                        keys.append(key)
        return sorted(keys)

    # ---------------------------------------------------------------------------------- deletes
    def delete(self, key: str) -> bool:
        """Delete one blob; False when there was none."""
        path = self._resolve(validate_key(key))
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        remove_empty_folders(path.parent, self._root)
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under the folder ``prefix``; returns how many. The root is refused."""
        prefix = validate_prefix(prefix, allow_root=False)
        base = self._resolve(prefix)
        if base.is_symlink():
            base.unlink()
            remove_empty_folders(base.parent, self._root)
            return 0
        if not base.is_dir():
            return 0
        deleted = 0
        # Bottom-up, without following links: a link is removed, never what it points to.
        for dirpath, dirnames, filenames in os.walk(base, topdown=False):
            for name in filenames:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    if not name.startswith(_TEMP_PREFIX):
                        deleted += 1
            for name in dirnames:
                sub = os.path.join(dirpath, name)
                if os.path.islink(sub):
                    os.unlink(sub)
                else:
                    with contextlib.suppress(OSError):  # a write may have landed meanwhile
                        os.rmdir(sub)
        with contextlib.suppress(OSError):
            base.rmdir()
        remove_empty_folders(base.parent, self._root)
        return deleted


def _with_suffix(key: str, suffix: str) -> str:
    head, _, name = key.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if dot and stem and f".{ext.lower()}" in _IMAGE_SUFFIXES:
        name = stem
    return validate_key(f"{head}/{name}{suffix}" if head else f"{name}{suffix}")
