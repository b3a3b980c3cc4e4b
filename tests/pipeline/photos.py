"""Real test photos from PyPI packages, and edits of them that stand in for a user's photo set.

No package ships two photos of one person, so "the same person" is one photo edited (flip, small
rotation, crop, scale, exposure, recompression). Every helper returns RGB uint8 arrays or encoded
bytes; nothing here is NSFW.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from matplotlib import cbook
from PIL import Image, ImageEnhance

from storage.blobs import BlobStore


@cache
def _astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut())


@cache
def _grace_hopper() -> np.ndarray:
    with Image.open(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def astronaut() -> np.ndarray:
    """Eileen Collins, one face (512×512)."""
    return _astronaut().copy()


def grace_hopper() -> np.ndarray:
    """Grace Hopper, one face (512×600)."""
    return _grace_hopper().copy()


def camera() -> np.ndarray:
    """The cameraman (grey, as RGB): one small face of about 70 px."""
    return np.ascontiguousarray(np.repeat(skimage.data.camera()[:, :, None], 3, axis=2))


def coffee() -> np.ndarray:
    """A cup of coffee: no face."""
    return np.ascontiguousarray(skimage.data.coffee())


def chelsea() -> np.ndarray:
    """A cat: no human face."""
    return np.ascontiguousarray(skimage.data.chelsea())


# ----------------------------------------------------------------------------------------- encoding
def encode(image: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    """Encode an RGB array (PNG by default: lossless, so pixels survive the round trip)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose stored pixels must be transformed by EXIF ``orientation`` to show ``image``.

    For orientation 6 ("rotate 90° clockwise to display") the stored pixels are ``image`` turned
    90° counter-clockwise, as a phone held upright writes them.
    """
    stored = {1: image, 3: np.rot90(image, 2), 6: np.rot90(image, 1), 8: np.rot90(image, -1)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(np.ascontiguousarray(stored), "JPEG", quality=92, exif=exif.tobytes())


# -------------------------------------------------------------------------------------------- edits
def flipped(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    """Turned counter-clockwise by ``degrees`` about the centre, same size, edges replicated."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def cropped(image: np.ndarray, left: int, top: int, right: int, bottom: int) -> np.ndarray:
    """``image`` with that many pixels cut off each side."""
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[top : h - bottom, left : w - right])


def scaled(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (round(w * factor), round(h * factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)


def exposed(image: np.ndarray, factor: float) -> np.ndarray:
    """Brightness times ``factor``."""
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(image)).enhance(factor))


def blurred(image: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def turned_clockwise(image: np.ndarray, quarter_turns: int = 1) -> np.ndarray:
    """A sideways photo without EXIF: pixels turned clockwise by 90° × ``quarter_turns``."""
    return np.ascontiguousarray(np.rot90(image, -quarter_turns))


def same_person_set(image: np.ndarray) -> list[np.ndarray]:
    """Five edited copies of one photo: distinct pictures of "the same person"."""
    return [
        image,
        flipped(image),
        rotated(image, 6),
        cropped(scaled(image, 1.25), 40, 30, 60, 50),
        exposed(image, 1.25),
    ]


def photo_folder(folder: Path, count: int = 3) -> Path:
    """A new ``folder`` with ``count`` PNG photos of one person (``0.png``, ``1.png``, …), as an operator
    points script-mode ``train`` at."""
    folder.mkdir()
    for i, image in enumerate(same_person_set(astronaut())[:count]):
        (folder / f"{i}.png").write_bytes(encode(image))
    return folder


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two photos pasted next to each other (two same-size faces when both show one)."""
    height = min(left.shape[0], right.shape[0])
    return np.ascontiguousarray(np.concatenate([left[:height], right[:height]], axis=1))


def with_small_face(image: np.ndarray, factor: float = 0.2, canvas: int = 600) -> np.ndarray:
    """The photo shrunk by ``factor`` and pasted on a plain grey canvas: a small face."""
    small = scaled(image, factor)
    out = np.full((canvas, canvas, 3), 120, np.uint8)
    top = (canvas - small.shape[0]) // 2
    left = (canvas - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out


def truncated_jpeg(image: np.ndarray) -> bytes:
    data = encode(image, "JPEG", quality=90)
    return data[: len(data) // 3]


TEXT_BYTES = b"these are not the pixels you are looking for\n" * 20


def store_same_person(blobs: BlobStore, folder: str = "users/1/photos/1") -> list[str]:
    """:func:`same_person_set` of the astronaut stored as PNG blobs, as the bot stores a user's photos."""
    keys = []
    for i, image in enumerate(same_person_set(astronaut())):
        keys.append(f"{folder}/{i}.png")
        blobs.put_bytes(keys[-1], encode(image))
    return keys
