"""Portraits as Discord attachments: each file under the channel's upload limit.

A file that is already small enough is sent byte for byte. A larger one (a PNG, typically) is
re-encoded as JPEG at falling quality, then scaled down, until it fits. Blocking (Pillow): call it in
a thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image

#: JPEG qualities tried in turn before the image is scaled down.
_QUALITIES = (92, 85, 75, 65)
#: Each scaling step keeps this fraction of the sides.
_SCALE_STEP = 0.75
#: Below this side length an image is not worth sending.
_MIN_SIDE = 64


class CannotFit(Exception):
    """The image cannot be made small enough (or is not an image)."""


@dataclass(frozen=True, slots=True)
class Upload:
    """One file ready to attach."""

    filename: str
    data: bytes


def fit_upload(data: bytes, filename: str, limit: int) -> Upload:
    """``data`` as a file of at most ``limit`` bytes: unchanged if it fits, else a smaller JPEG."""
    if len(data) <= limit:
        return Upload(filename, data)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError) as exc:
        raise CannotFit(f"{filename} is not a readable image") from exc
    name = PurePosixPath(filename).stem + ".jpg"
    while min(image.size) >= _MIN_SIDE:
        for quality in _QUALITIES:
            encoded = _jpeg(image, quality)
            if len(encoded) <= limit:
                return Upload(name, encoded)
        width, height = image.size
        image = image.resize((int(width * _SCALE_STEP), int(height * _SCALE_STEP)), Image.Resampling.LANCZOS)
    raise CannotFit(f"{filename} does not fit in {limit} bytes")


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
