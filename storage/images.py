"""Uploaded photos made safe and uniform: decoded, upright, 8-bit sRGB, without metadata.

Whatever a phone, a scanner or an editor wrote, the stored photo is 8 bits per channel in sRGB, in
mode ``RGB`` or ``L``, with no ICC profile, EXIF, XMP, GPS or comment left in it:

- 16-bit samples are scaled to 8 bits (65535 → 255), never clipped;
- an embedded ICC profile is applied with LittleCMS (Pillow's ImageCms), then dropped: untagged
  pixels are sRGB by convention, which is what every later stage assumes;
- CMYK without a profile gets Pillow's plain conversion; palette images are expanded;
- transparency (an alpha channel, a palette or ``tRNS`` transparent colour) is composited on white,
  as the pipeline does with photos (FaceChain cuts faces out onto white).

A profile that cannot be read, or that describes another colour space than the pixels, is ignored
(the pixels are taken as sRGB, as browsers do) and a warning is logged.

This module imports only the standard library and Pillow, like the blob store that calls it.
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageMath, ImageOps

log = logging.getLogger("facechain.images")

#: Decoded photos larger than this are refused (decompression bombs; no phone camera comes close).
DEFAULT_MAX_PIXELS = 40_000_000
JPEG_QUALITY = 95

#: Pillow format → (MIME type, file suffix). MPO is the multi-picture JPEG many phones write.
PHOTO_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", ".jpg"),
    "MPO": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "WEBP": ("image/webp", ".webp"),
}
#: What Image.open may try (the JPEG opener also returns MPO files).
_OPENERS = ("JPEG", "PNG", "WEBP")
#: The colour space an ICC profile must describe for pixels of each mode (ICC header signatures).
_PROFILE_SPACES = {"RGB": "RGB", "L": "GRAY", "CMYK": "CMYK"}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WHITE = 255


class NotAnImage(ValueError):
    """Upload that is not a JPEG, PNG or WebP Pillow can fully decode within the pixel limit."""


@dataclass(frozen=True, slots=True)
class CleanedPhoto:
    """A photo re-encoded by :func:`clean_photo`."""

    data: bytes
    width: int
    height: int
    mime: str
    #: ``.jpg``, ``.png`` or ``.webp``: the format of the upload is kept.
    suffix: str


def clean_photo(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> CleanedPhoto:
    """Decode, turn upright by EXIF orientation, convert to 8-bit sRGB and re-encode without metadata.

    JPEG (and MPO) come out as JPEG at quality 95, PNG as PNG, WebP as WebP. Raises
    :class:`NotAnImage` for anything that does not fully decode as one of those within
    ``max_pixels``.
    """
    try:
        with Image.open(io.BytesIO(data), formats=_OPENERS) as img:
            if img.width * img.height > max_pixels:
                raise NotAnImage(f"image of {img.width}×{img.height} pixels is too large")
            # load() decodes every pixel: a truncated or corrupt file fails here, not later.
            img.load()
            fmt = str(img.format)
            icc = img.info.get("icc_profile") or None
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:
                # A broken EXIF block should not cost the user a good photo: keep it as decoded.
                upright = img.copy()
    except NotAnImage:
        raise
    except Exception as exc:  # Pillow signals bad input with many exception types
        raise NotAnImage(f"not a JPEG, PNG or WebP image Pillow can decode: {exc}") from exc

    mime, suffix = PHOTO_FORMATS[fmt]
    srgb = to_srgb(upright, icc)
    # Nothing Pillow carried over from the upload (exif, xmp, comment, dpi, icc, ...) is written.
    srgb.info = {}
    out = io.BytesIO()
    if mime == "image/jpeg":
        srgb.save(out, "JPEG", quality=JPEG_QUALITY)
    elif mime == "image/png":
        srgb.save(out, "PNG")
    else:
        srgb.convert("RGB").save(out, "WEBP", quality=JPEG_QUALITY)
    return CleanedPhoto(out.getvalue(), srgb.width, srgb.height, mime, suffix)


def to_srgb(img: Image.Image, icc: bytes | None = None) -> Image.Image:
    """``img`` as 8-bit sRGB pixels in mode ``RGB`` or ``L``, opaque (see the module docstring).

    ``icc`` is the profile the pixels were written in (``img.info["icc_profile"]``); None means sRGB.
    """
    img = _eight_bit(img)
    colour, alpha = _split_alpha(img)
    colour = _apply_profile(colour, icc)
    if colour.mode not in ("RGB", "L"):
        colour = colour.convert("RGB")
    if alpha is None:
        return colour
    if alpha.mode != "L":
        alpha = alpha.convert("L")
    white = Image.new(colour.mode, colour.size, (_WHITE,) * len(colour.getbands()))
    return Image.composite(colour, white, alpha)


# --------------------------------------------------------------------------------------- steps
def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer) grey scaled to 8 bits; 1-bit grey and palettes expanded."""
    if img.mode in _SIXTEEN_BIT:
        transparent = img.info.get("transparency")
        wide = img if img.mode == "I" else img.convert("I")
        # Pillow's own I;16 → L conversion clips at 255: scale instead (rounded).
        grey = wide.point(lambda v: v * (255 / 65535) + 0.5).convert("L")
        if isinstance(transparent, int):
            # A tRNS colour marks fully transparent pixels of a 16-bit grey PNG.
            opaque = ImageMath.lambda_eval(lambda a: a["im"] != transparent, im=wide).convert("L")
            grey = Image.merge("LA", (grey, opaque.point(lambda v: _WHITE if v else 0)))
        return grey
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("P", "PA"):
        transparent = img.mode == "PA" or "transparency" in img.info
        return img.convert("RGBA" if transparent else "RGB")
    return img


def _split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(the colour channels, the alpha channel or None when the image is opaque)."""
    if img.mode in ("L", "RGB") and "transparency" in img.info:
        img = img.convert("LA" if img.mode == "L" else "RGBA")
    if img.mode in ("LA", "La"):
        return img.getchannel("L"), img.getchannel("A")
    if img.mode in ("RGBA", "RGBa"):
        return img.convert("RGB"), img.getchannel("A")
    return img, None


def _apply_profile(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Pixels converted from the colour space ``icc`` describes to sRGB (RGB out; unchanged without one)."""
    if icc is None:
        return img
    expected = _PROFILE_SPACES.get(img.mode)
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = str(profile.profile.xcolor_space).strip()
        if space != expected:
            log.warning("ignored an ICC profile for %s pixels in a %s photo: taken as sRGB", space, img.mode)
            return img
        converted = ImageCms.profileToProfile(img, profile, _srgb(), outputMode="RGB")
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError) as exc:
        log.warning("ignored an unreadable ICC profile (%s): the photo is taken as sRGB", exc)
        return img
    assert converted is not None  # inPlace=False always returns the new image
    return converted


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
