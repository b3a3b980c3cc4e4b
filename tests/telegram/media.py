"""Files the simulated users send: real face photos (distinct edits of public test images), a photo
with no face, and a minimal LoRA in the real safetensors layout."""

from __future__ import annotations

import io
import json
import struct
from functools import cache

import numpy as np
from PIL import Image

from tests.pipeline import photos

#: The scripted GPU treats a photo of exactly this size as "no face found" (see gpu.py). The real
#: pipeline finds no face in it either: it is a cup of coffee.
NOT_A_FACE_SIZE = (200, 150)
FACE_SIDE = 512


def _jpeg(image: np.ndarray, quality: int = 88) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@cache
def _faces() -> tuple[bytes, ...]:
    sources = photos.same_person_set(photos.astronaut()) + photos.same_person_set(photos.grace_hopper())
    out = []
    for image in sources:
        side = min(image.shape[:2])
        square = np.ascontiguousarray(image[:side, :side])
        out.append(_jpeg(np.asarray(Image.fromarray(square).resize((FACE_SIDE, FACE_SIDE)))))
    return tuple(out)


def face_photos(count: int, start: int = 0) -> list[bytes]:
    """``count`` distinct JPEG face photos (up to 10)."""
    faces = _faces()
    assert start + count <= len(faces), "only ten distinct face photos are available"
    return list(faces[start : start + count])


@cache
def not_a_face() -> bytes:
    image = Image.fromarray(photos.coffee()).resize(NOT_A_FACE_SIZE)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def tiny_lora() -> bytes:
    """A kohya-style SD 1.5 LoRA with one adapted layer, in the safetensors layout."""
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    header = {
        f"{base}.lora_down.weight": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]},
        f"{base}.lora_up.weight": {"dtype": "F32", "shape": [4, 2], "data_offsets": [32, 64]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(64)
