"""Every kind of photo comes out of the blob store as 8-bit sRGB that looks like the upload.

Each test builds the upload with Pillow (or writes the PNG chunks itself where Pillow cannot, as for
16-bit RGB), stores it through ``BlobStore.put_photo``, and compares the stored pixels with what the
source means: 16-bit values scaled, transparency on white, CMYK and ICC-tagged colours converted.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from storage.blobs import BlobStore
from storage.images import to_srgb
from tests.storage import icc

#: Mean absolute error (0..255 per channel) allowed after conversion and re-encoding.
CLOSE = 2.0
#: What ignoring the colour information would cost at least, in the same unit (the tests would notice).
FAR = 20.0


def stored_pixels(blobs: BlobStore, upload: bytes, name: str = "p") -> tuple[Image.Image, np.ndarray]:
    """Store ``upload`` as a photo; return the stored image and its pixels as float RGB."""
    stored = blobs.put_photo(f"users/1/photos/{name}", upload)
    with Image.open(io.BytesIO(blobs.get_bytes(stored.key))) as clean:
        clean.load()
    assert clean.mode in ("RGB", "L"), clean.mode
    assert "icc_profile" not in clean.info, "the profile was applied, so it must not be stored"
    return clean, np.asarray(clean.convert("RGB"), dtype=np.float64)


def mean_error(pixels: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(pixels - np.broadcast_to(expected, pixels.shape)).mean())


def decoded(upload: bytes) -> np.ndarray:
    """The upload's raw samples as Pillow decodes them, with no colour management."""
    with Image.open(io.BytesIO(upload)) as img:
        return np.asarray(img)


def gradient(width: int = 64, height: int = 48) -> np.ndarray:
    """A smooth RGB test card (uint8): red across, green down, blue along the diagonal."""
    x = np.linspace(0, 255, width)[None, :]
    y = np.linspace(0, 255, height)[:, None]
    return np.stack(np.broadcast_arrays(x, y, (x + y) / 2), axis=-1).round().astype(np.uint8)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes, *chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG written chunk by chunk (Pillow cannot write 16-bit colour), filter 0 on every row."""
    stride = len(rows) // height
    raw = b"".join(b"\0" + rows[i * stride : (i + 1) * stride] for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = b"".join(chunk(kind, data) for kind, data in chunks)
    image = chunk(b"IDAT", zlib.compress(raw))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body + image + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------- 16 bits
def test_16_bit_grey_png_is_scaled_to_8_bits_not_clipped(blobs: BlobStore) -> None:
    ramp = np.linspace(0, 65535, 64 * 32).round().astype(np.uint16).reshape(32, 64)
    upload = encode(Image.fromarray(ramp), "PNG")
    with Image.open(io.BytesIO(upload)) as source:
        assert source.mode == "I;16", "the upload really is 16-bit grey"

    clean, pixels = stored_pixels(blobs, upload)

    assert clean.mode == "L"
    expected = (ramp / 257.0)[..., None]
    assert mean_error(pixels, expected) < 0.6
    assert pixels.max() == 255 and pixels.min() == 0
    assert (pixels == 255).mean() < 0.01, "clipping turns everything above 255 white"


def test_16_bit_rgb_and_rgba_png_are_scaled(blobs: BlobStore) -> None:
    rgb = (gradient().astype(np.uint16) * 257) ^ 0x00FF  # low bytes differ from the high ones
    rows = rgb.astype(">u2").tobytes()
    _, pixels = stored_pixels(blobs, png(64, 48, 16, 2, rows), "rgb16")
    assert mean_error(pixels, rgb / 257.0) < 1.0

    alpha = np.full((48, 64, 1), 65535, np.uint16)
    alpha[:, 32:] = 0
    rgba = np.concatenate([rgb, alpha], axis=-1)
    _, pixels = stored_pixels(blobs, png(64, 48, 16, 6, rgba.astype(">u2").tobytes()), "rgba16")
    assert mean_error(pixels[:, :32], rgb[:, :32] / 257.0) < 1.0
    assert mean_error(pixels[:, 32:], 255.0) == 0, "transparent half on white"


def test_16_bit_grey_with_a_transparent_value_is_composited_on_white(blobs: BlobStore) -> None:
    grey = np.full((16, 16), 0x2000, np.uint16)
    grey[:, 8:] = 0x1234
    upload = png(16, 16, 16, 0, grey.astype(">u2").tobytes(), (b"tRNS", struct.pack(">H", 0x1234)))

    _, pixels = stored_pixels(blobs, upload)

    assert mean_error(pixels[:, :8], 0x2000 / 257) < 0.6
    assert mean_error(pixels[:, 8:], 255.0) == 0


# ---------------------------------------------------------------------------------- palettes
def test_palette_png_is_expanded_and_its_transparency_put_on_white(blobs: BlobStore) -> None:
    source = gradient()
    palette = Image.fromarray(source).quantize(64)
    expected = np.asarray(palette.convert("RGB"), dtype=np.float64)
    _, pixels = stored_pixels(blobs, encode(palette, "PNG"), "opaque")
    assert mean_error(pixels, expected) == 0

    transparent = palette.copy()
    index = int(np.asarray(transparent)[0, 0])
    transparent.info["transparency"] = index
    hidden = np.asarray(transparent) == index
    clean, pixels = stored_pixels(blobs, encode(transparent, "PNG"), "transparent")
    assert clean.mode == "RGB"
    assert mean_error(pixels[hidden], 255.0) == 0
    assert mean_error(pixels[~hidden], expected[~hidden]) == 0


# ------------------------------------------------------------------------------------- alpha
@pytest.mark.parametrize(("mode", "fmt"), [("RGBA", "PNG"), ("LA", "PNG"), ("RGBA", "WEBP")])
def test_alpha_is_composited_on_white(blobs: BlobStore, mode: str, fmt: str) -> None:
    colour = gradient()
    alpha = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))  # clear → opaque
    source = Image.fromarray(np.dstack([colour, alpha]), "RGBA").convert(mode)
    params = {"lossless": True} if fmt == "WEBP" else {}
    upload = encode(source, fmt, **params)

    _, pixels = stored_pixels(blobs, upload, f"alpha-{mode}")

    samples = np.asarray(source.convert("RGBA"), dtype=np.float64)
    opacity = samples[..., 3:4] / 255
    expected = samples[..., :3] * opacity + 255 * (1 - opacity)
    assert mean_error(pixels, expected) < CLOSE
    assert mean_error(pixels[:, :2], 255.0) < 3.0, "the clear edge is white, not black"


# -------------------------------------------------------------------------------------- CMYK
def test_cmyk_jpeg_without_a_profile_keeps_its_colours(blobs: BlobStore) -> None:
    source = gradient()
    upload = encode(Image.fromarray(source).convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(upload)) as original:
        assert original.mode == "CMYK"

    clean, pixels = stored_pixels(blobs, upload)

    assert clean.format == "JPEG" and clean.mode == "RGB"
    assert mean_error(pixels, source) < CLOSE + 1  # two lossy JPEG encodings


def test_cmyk_jpeg_with_a_profile_is_converted_through_it(blobs: BlobStore) -> None:
    ink = gradient()
    black = np.tile(np.linspace(0, 160, 48)[:, None], (1, 64)).round().astype(np.uint8)
    cmyk = np.dstack([ink, black])
    upload = encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=98, icc_profile=icc.inverse_cmyk())

    _, pixels = stored_pixels(blobs, upload)

    expected = icc.inverse_cmyk_expected(decoded(upload))
    assert mean_error(pixels, expected) < CLOSE
    naive = np.asarray(Image.fromarray(decoded(upload), "CMYK").convert("RGB"), dtype=np.float64)
    assert mean_error(naive, expected) > FAR, "the profile is far from the plain conversion"


# --------------------------------------------------------------------------------------- ICC
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_rgb_profile_is_applied_then_dropped(blobs: BlobStore, fmt: str) -> None:
    params: dict[str, object] = {"icc_profile": icc.swapped_linear_rgb()}
    if fmt != "PNG":
        params["quality"] = 98
    upload = encode(Image.fromarray(gradient()), fmt, **params)

    _, pixels = stored_pixels(blobs, upload, fmt.lower())

    samples = decoded(upload)
    expected = icc.swapped_linear_expected(samples)
    assert mean_error(pixels, expected) < CLOSE
    assert mean_error(samples.astype(np.float64), expected) > FAR, "ignoring the profile would show"


def test_a_grey_profile_is_applied(blobs: BlobStore) -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (16, 1))
    upload = encode(Image.fromarray(ramp), "JPEG", quality=98, icc_profile=icc.linear_grey())

    _, pixels = stored_pixels(blobs, upload)

    expected = icc.linear_grey_expected(decoded(upload))[..., None]
    assert mean_error(pixels, expected) < CLOSE
    assert mean_error(decoded(upload)[..., None].astype(np.float64), expected) > FAR


def test_a_profile_and_alpha_together(blobs: BlobStore) -> None:
    colour = gradient()
    alpha = np.full((48, 64), 255, np.uint8)
    alpha[:, 48:] = 0
    upload = encode(Image.fromarray(np.dstack([colour, alpha]), "RGBA"), "PNG", icc_profile=icc.swapped_linear_rgb())

    _, pixels = stored_pixels(blobs, upload)

    assert mean_error(pixels[:, :48], icc.swapped_linear_expected(colour[:, :48])) < CLOSE
    assert mean_error(pixels[:, 48:], 255.0) == 0


def test_a_broken_or_foreign_profile_is_ignored_with_a_warning(
    blobs: BlobStore, caplog: pytest.LogCaptureFixture
) -> None:
    source = gradient()
    broken = encode(Image.fromarray(source), "PNG", icc_profile=b"\0\0\0\x80not a profile" + b"\0" * 200)
    foreign = encode(Image.fromarray(source[..., 0]), "PNG", icc_profile=icc.swapped_linear_rgb())

    with caplog.at_level(logging.WARNING, logger="facechain.images"):
        _, pixels = stored_pixels(blobs, broken, "broken")
        _, grey = stored_pixels(blobs, foreign, "foreign")

    assert mean_error(pixels, source) == 0, "taken as sRGB, as browsers do"
    assert mean_error(grey, source[..., :1]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreadable ICC profile" in m for m in messages), messages
    assert any("ICC profile for RGB pixels in a L photo" in m for m in messages), messages


def test_srgb_conversion_keeps_8_bit_rgb_and_grey_untouched() -> None:
    rgb = Image.fromarray(gradient())
    grey = rgb.convert("L")
    assert to_srgb(rgb).tobytes() == rgb.tobytes()
    assert to_srgb(grey).tobytes() == grey.tobytes() and to_srgb(grey).mode == "L"
