"""Real ICC v2 profiles built byte by byte, with colour transforms a test can compute on its own.

``ImageCms.createProfile`` only makes sRGB, LAB and XYZ profiles, none of which a JPEG, PNG or WebP
photo carries. These builders write the ICC structures LittleCMS reads (header, tag table, ``desc``,
``wtpt``, matrix/TRC tags for RGB and grey, an ``A2B0`` lut16 for CMYK), so a photo can be tagged
with a profile whose effect is known exactly:

- :func:`swapped_linear_rgb`: channel 1 drives sRGB's green primary, 2 blue, 3 red, in linear light;
- :func:`linear_grey`: grey values are linear light;
- :func:`inverse_cmyk`: C, M, Y are the sRGB red, green, blue values, K darkens them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from PIL import ImageCms

#: The ICC profile connection space's white (D50).
D50 = (0.9642, 1.0, 0.8249)
#: Grid points per axis of the CMYK lookup table (LittleCMS interpolates between them).
CMYK_GRID = 9


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear light (0..1) → sRGB values (0..1)."""
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """sRGB values (0..1) → linear light (0..1)."""
    x = np.clip(encoded, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4))


def srgb_colorants() -> np.ndarray:
    """3×3 matrix whose columns are sRGB's red, green and blue primaries in the D50 PCS (XYZ)."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).profile
    return np.array([profile.red_colorant[0], profile.green_colorant[0], profile.blue_colorant[0]]).T


def swapped_linear_rgb() -> bytes:
    """An RGB profile with linear curves whose primaries are sRGB's, rotated: R→green, G→blue, B→red."""
    red, green, blue = srgb_colorants().T
    linear = _curve_gamma(1.0)
    return _profile(
        b"mntr", b"RGB ",
        [(b"rXYZ", _xyz(green)), (b"gXYZ", _xyz(blue)), (b"bXYZ", _xyz(red)),
         (b"rTRC", linear), (b"gTRC", linear), (b"bTRC", linear)],
        "swapped linear RGB",
    )  # fmt: skip


def swapped_linear_expected(rgb: np.ndarray) -> np.ndarray:
    """What :func:`swapped_linear_rgb` pixels (uint8, …×3) look like in sRGB (0..255 floats)."""
    linear = rgb.astype(np.float64) / 255
    return srgb_encode(linear[..., [2, 0, 1]]) * 255


def linear_grey() -> bytes:
    """A grey profile whose values are linear light."""
    return _profile(b"mntr", b"GRAY", [(b"kTRC", _curve_gamma(1.0))], "linear grey")


def linear_grey_expected(grey: np.ndarray) -> np.ndarray:
    return srgb_encode(grey.astype(np.float64) / 255) * 255


def inverse_cmyk() -> bytes:
    """A CMYK printer profile in which C, M, Y are the sRGB red, green and blue values and K scales
    their light: sRGB = encode(decode(C, M, Y) × decode(1 − K)), far from any plain CMYK → RGB formula.

    Input curves do the sRGB decoding, a 9-point grid holds the (multilinear) rest.
    """
    entries = 256
    ramp = np.linspace(0.0, 1.0, entries)
    curves = [srgb_decode(ramp)] * 3 + [1.0 - srgb_decode(1.0 - ramp)]
    tables = b"".join(struct.pack(f">{entries}H", *np.round(c * 65535).astype(int).tolist()) for c in curves)
    matrix = srgb_colorants()
    axis = np.linspace(0.0, 1.0, CMYK_GRID)
    grid = bytearray()
    # ICC grid order: the first input channel varies slowest.
    for c in axis:
        for m in axis:
            for y in axis:
                for k in axis:
                    xyz = matrix @ (np.array([c, m, y]) * (1.0 - k))
                    grid += struct.pack(">3H", *(min(0xFFFF, round(v * 32768)) for v in xyz))
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    straight = struct.pack(">2H", 0, 0xFFFF)
    lut16 = (
        b"mft2\0\0\0\0" + struct.pack(">4B", 4, 3, CMYK_GRID, 0) + identity + struct.pack(">2H", entries, 2)
        + tables + bytes(grid) + straight * 3
    )  # fmt: skip
    return _profile(b"prtr", b"CMYK", [(b"A2B0", lut16)], "inverse CMYK")


def inverse_cmyk_expected(cmyk: np.ndarray) -> np.ndarray:
    """What :func:`inverse_cmyk` pixels (uint8, …×4) look like in sRGB (0..255 floats)."""
    values = cmyk.astype(np.float64) / 255
    light = srgb_decode(values[..., :3]) * srgb_decode(1.0 - values[..., 3:4])
    return srgb_encode(light) * 255


# ------------------------------------------------------------------------------------- encoding
def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(xyz: Sequence[float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def _curve_gamma(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def _description(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text
        + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67
    )  # fmt: skip


def _profile(device_class: bytes, space: bytes, tags: list[tuple[bytes, bytes]], name: str) -> bytes:
    """Header, tag table and tags of a version 2.1 profile with an XYZ connection space."""
    tags = [(b"desc", _description(name)), (b"cprt", b"text\0\0\0\0no copyright\0"), (b"wtpt", _xyz(D50)), *tags]
    table, body = bytearray(), bytearray()
    start = 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        padded = data + b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += padded
    header = (
        struct.pack(">I", start + len(body)) + b"\0" * 4 + struct.pack(">I", 0x02100000)
        + device_class + space + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 28
        + b"".join(_s15(v) for v in D50)
    )  # fmt: skip
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + bytes(table) + bytes(body)
