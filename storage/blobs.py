"""A blob store on local disk, addressed by keys such as ``users/12/photos/abc.jpg``.

Synchronous on purpose: the GPU worker calls it directly and the bot calls it through
``asyncio.to_thread``. It imports only the standard library and Pillow, so the worker can use it
without the database stack.

Keys are relative, ``/``-separated paths whose segments start with a letter, digit or ``_`` and
continue with ``[A-Za-z0-9_.=-]`` (the same rule as ``pipeline.jobs``), so ``..``, hidden files,
absolute paths and backslashes can never name a blob. Writes are atomic: a reader sees the old
blob or the new one, never part of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

MAX_KEY_LENGTH = 512
#: Leaves room under the usual 255-byte file name limit for the temporary name of a write.
MAX_SEGMENT_LENGTH = 200
#: Decoded photos larger than this are refused (decompression bombs; no phone camera comes close).
DEFAULT_MAX_PIXELS = 40_000_000
JPEG_QUALITY = 95

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=-]*")
_TEMP_PREFIX = ".tmp-"
_CHUNK = 1024 * 1024

#: Pillow format → (MIME type, file suffix). MPO is the multi-picture JPEG many phones write.
_PHOTO_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", ".jpg"),
    "MPO": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "WEBP": ("image/webp", ".webp"),
}
#: What Image.open may try (the JPEG opener also returns MPO files).
_OPENERS = ("JPEG", "PNG", "WEBP")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class InvalidBlobKey(ValueError):
    """A key that is malformed, or that would resolve outside the store's root."""


class BlobNotFound(FileNotFoundError):
    """No blob is stored under this key."""


class NotAnImage(ValueError):
    """Upload that is not a JPEG, PNG or WebP Pillow can fully decode within the pixel limit."""


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


def _validate_prefix(prefix: str, *, allow_root: bool) -> str:
    """A prefix is a key naming a folder; one trailing ``/`` is accepted. ``""`` is the whole store."""
    bare = prefix[:-1] if prefix.endswith("/") else prefix
    if bare == "" and allow_root:
        return ""
    return validate_key(bare)


class BlobStore:
    """Blobs under one root directory. Safe for several threads and processes writing distinct keys."""

    def __init__(self, root: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, file_mode: int = 0o600) -> None:
        """Create the root if needed. ``file_mode`` applies to every blob written (photos are private)."""
        root.mkdir(parents=True, exist_ok=True)
        self._root = root.resolve(strict=True)
        self._max_pixels = max_pixels
        self._file_mode = file_mode

    @property
    def root(self) -> Path:
        return self._root

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
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as tmp:
                write(tmp)
                tmp.flush()
                os.fchmod(tmp.fileno(), self._file_mode)
                os.fsync(tmp.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(target.parent)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any blob there, atomically."""
        self._write_atomic(key, lambda f: f.write(data))

    def put_file(self, key: str, src: Path) -> None:
        """Copy the file ``src`` into the store under ``key``, atomically."""
        with src.open("rb") as source:
            self._write_atomic(key, lambda f: shutil.copyfileobj(source, f, _CHUNK))

    def put_photo(self, key: str, data: bytes) -> StoredPhoto:
        """Store an uploaded photo cleaned of metadata, upright, and say what it is.

        The photo is decoded with Pillow (anything that does not fully decode as JPEG, PNG or WebP
        within the pixel limit raises :class:`NotAnImage`), rotated by its EXIF orientation, and
        re-encoded without EXIF, XMP, GPS or comments: JPEG at quality 95 keeping the ICC profile,
        PNG and WebP likewise. The stored key's suffix is set to the stored format
        (``.jpg``, ``.png`` or ``.webp``): use the returned :attr:`StoredPhoto.key`.
        """
        validate_key(key)
        encoded, width, height, mime, suffix = _clean_photo(data, self._max_pixels)
        stored_key = _with_suffix(key, suffix)
        self.put_bytes(stored_key, encoded)
        return StoredPhoto(
            key=stored_key,
            sha256=hashlib.sha256(data).hexdigest(),
            width=width,
            height=height,
            mime=mime,
            size=len(encoded),
        )

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
        prefix = _validate_prefix(prefix, allow_root=True)
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
        self._prune(path.parent)
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under the folder ``prefix``; returns how many. The root is refused."""
        prefix = _validate_prefix(prefix, allow_root=False)
        base = self._resolve(prefix)
        if base.is_symlink():
            base.unlink()
            self._prune(base.parent)
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
        self._prune(base.parent)
        return deleted

    def _prune(self, folder: Path) -> None:
        """Remove now-empty folders from ``folder`` up to (not including) the root."""
        while folder != self._root and folder.is_relative_to(self._root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (the directory entry itself must reach the disk)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _with_suffix(key: str, suffix: str) -> str:
    head, _, name = key.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if dot and stem and f".{ext.lower()}" in _IMAGE_SUFFIXES:
        name = stem
    return validate_key(f"{head}/{name}{suffix}" if head else f"{name}{suffix}")


def _clean_photo(data: bytes, max_pixels: int) -> tuple[bytes, int, int, str, str]:
    """Decode, orient and re-encode without metadata: (bytes, width, height, mime, suffix)."""
    try:
        with Image.open(io.BytesIO(data), formats=_OPENERS) as img:
            if img.width * img.height > max_pixels:
                raise NotAnImage(f"image of {img.width}×{img.height} pixels is too large")
            # load() decodes every pixel: a truncated or corrupt file fails here, not later.
            img.load()
            fmt = str(img.format)
            icc = img.info.get("icc_profile")
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:
                # A broken EXIF block should not cost the user a good photo: keep it as decoded.
                upright = img.copy()
    except NotAnImage:
        raise
    except Exception as exc:  # Pillow signals bad input with many exception types
        raise NotAnImage(f"not a JPEG, PNG or WebP image Pillow can decode: {exc}") from exc

    mime, suffix = _PHOTO_FORMATS[fmt]
    if mime == "image/jpeg":
        if upright.mode not in ("RGB", "L"):
            if upright.mode == "CMYK":
                icc = None  # the profile describes CMYK, not the RGB pixels we write
            upright = upright.convert("RGB")
    elif upright.mode not in ("RGB", "RGBA", "L"):
        has_alpha = "A" in upright.getbands() or "transparency" in upright.info
        upright = upright.convert("RGBA" if has_alpha else "RGB")
    # Everything Pillow carried over from the upload (exif, xmp, comment, dpi, ...) goes.
    upright.info = {}

    out = io.BytesIO()
    if mime == "image/jpeg":
        upright.save(out, "JPEG", quality=JPEG_QUALITY, icc_profile=icc)
    elif mime == "image/png":
        upright.save(out, "PNG", icc_profile=icc)
    else:
        upright.save(out, "WEBP", quality=JPEG_QUALITY, icc_profile=icc or "")
    return out.getvalue(), upright.width, upright.height, mime, suffix
