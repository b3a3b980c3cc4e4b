from __future__ import annotations

import hashlib
import io
import struct
import zlib

import pytest
from PIL import Image, ImageCms
from PIL.ExifTags import IFD
from PIL.PngImagePlugin import PngInfo

from storage.blobs import BlobStore, LocalBlobStore, NotAnImage

RED = (255, 0, 0)
BLUE = (0, 0, 255)
ORIENTATION = 0x0112
GPS_SECRET = (52.0, 31.0, 12.345)
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>secret-xmp-location</rdf:RDF></x:xmpmeta>'


def two_tone(width: int = 40, height: int = 20, mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: shows which way the pixels were turned."""
    img = Image.new(mode, (width, height), BLUE)
    img.paste(RED, (0, 0, width // 2, height))
    return img


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "SecretCam"
    exif[IFD.GPSInfo] = {1: "N", 2: GPS_SECRET, 3: "E", 4: (13.0, 24.0, 0.0)}
    return exif


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def test_jpeg_with_gps_comes_out_without_any_metadata_and_upright(blobs: BlobStore) -> None:
    icc = srgb_icc()
    upload = encode(
        two_tone(),
        "JPEG",
        exif=exif_with_gps(orientation=6),
        xmp=XMP,
        comment=b"secret comment",
        icc_profile=icc,
    )
    # The upload really carries what must disappear.
    with Image.open(io.BytesIO(upload)) as original:
        assert original.getexif().get_ifd(IFD.GPSInfo)[2] == GPS_SECRET
        assert original.getexif()[ORIENTATION] == 6
    assert b"secret-xmp-location" in upload and b"secret comment" in upload

    stored = blobs.put_photo("users/1/photos/p1.jpg", upload)

    data = blobs.get_bytes(stored.key)
    assert b"Exif\x00\x00" not in data
    assert b"SecretCam" not in data
    assert b"secret-xmp-location" not in data and b"http://ns.adobe.com/xap" not in data
    assert b"secret comment" not in data
    with Image.open(io.BytesIO(data)) as clean:
        assert clean.format == "JPEG"
        assert "exif" not in clean.info
        assert len(clean.getexif()) == 0
        assert "icc_profile" not in clean.info, "the (sRGB) profile was applied, then dropped"
        # Orientation 6 = turn 90° clockwise: 40×20 becomes 20×40, the red left half ends on top.
        assert clean.size == (20, 40)
        rgb = clean.convert("RGB")
        top, bottom = rgb.getpixel((10, 5)), rgb.getpixel((10, 35))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom

    assert stored.key == "users/1/photos/p1.jpg"
    assert (stored.width, stored.height, stored.mime) == (20, 40, "image/jpeg")
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(upload).hexdigest()


def test_a_jpeg_needing_no_conversion_keeps_none_of_its_metadata(blobs: BlobStore) -> None:
    """An upright sRGB JPEG without a profile goes through no pixel conversion: the decoded image's own
    metadata (``info``: EXIF, XMP, comment) reaches the encoder unless the cleaner drops it.

    Pillow writes some of ``info`` back on its own (a JPEG's comment today); this upload carries
    every kind so that whatever a Pillow version copies over is caught here.
    """
    upload = encode(two_tone(), "JPEG", exif=exif_with_gps(orientation=1), xmp=XMP, comment=b"secret comment")
    with Image.open(io.BytesIO(upload)) as original:
        assert {"exif", "xmp", "comment"} <= set(original.info), original.info.keys()

    data = blobs.get_bytes(blobs.put_photo("users/1/photos/plain.jpg", upload).key)

    assert b"secret comment" not in data
    assert b"SecretCam" not in data and b"Exif\x00\x00" not in data
    assert b"secret-xmp-location" not in data
    with Image.open(io.BytesIO(data)) as clean:
        assert not {"exif", "xmp", "comment"} & set(clean.info), clean.info.keys()
        assert clean.size == (40, 20)


def test_png_metadata_is_dropped_and_palette_transparency_put_on_white(blobs: BlobStore) -> None:
    info = PngInfo()
    info.add_text("Author", "secret-author")
    img = two_tone().convert("P")
    img.info["transparency"] = img.getpixel((0, 0))  # the red half
    upload = encode(img, "PNG", pnginfo=info, exif=exif_with_gps())
    assert b"secret-author" in upload and b"eXIf" in upload

    stored = blobs.put_photo("users/1/photos/p2.jpg", upload)

    assert stored.key == "users/1/photos/p2.png"  # suffix follows the stored format
    assert stored.mime == "image/png"
    data = blobs.get_bytes(stored.key)
    assert b"secret-author" not in data and b"eXIf" not in data and b"SecretCam" not in data
    with Image.open(io.BytesIO(data)) as clean:
        assert clean.mode == "RGB"
        assert len(clean.getexif()) == 0
        assert clean.size == (40, 20)
        # The red half was transparent: it lies on white now.
        assert clean.getpixel((5, 5)) == (255, 255, 255)
        assert clean.getpixel((35, 5)) == BLUE


def test_webp_exif_is_dropped(blobs: BlobStore) -> None:
    upload = encode(two_tone(), "WEBP", exif=exif_with_gps(orientation=3), xmp=XMP)
    assert b"SecretCam" in upload

    stored = blobs.put_photo("users/1/photos/p3", upload)

    assert stored.key == "users/1/photos/p3.webp"
    data = blobs.get_bytes(stored.key)
    assert b"SecretCam" not in data and b"secret-xmp-location" not in data
    with Image.open(io.BytesIO(data)) as clean:
        assert len(clean.getexif()) == 0
        # Orientation 3 = turned 180°: the red half ends on the right.
        pixel = clean.convert("RGB").getpixel((35, 10))
    assert isinstance(pixel, tuple) and pixel[0] > 200


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1×1 PNG whose header claims ``width``×``height`` pixels."""
    png = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = bytearray(png[12:29])  # b"IHDR" + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    png[12:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(png)


def truncated_jpeg() -> bytes:
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG", quality=90)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "upload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not an image at all", id="text"),
        pytest.param(b"\xff\xd8\xff\xe0" + b"\x00" * 100, id="jpeg-magic-then-garbage"),
        pytest.param(truncated_jpeg(), id="truncated-jpeg"),
        pytest.param(encode(two_tone(), "GIF"), id="gif"),
        pytest.param(encode(two_tone(), "BMP"), id="bmp"),
        pytest.param(bomb_png(100_000, 100_000), id="decompression-bomb"),
        pytest.param(bomb_png(8_000, 6_000), id="48-megapixels"),
    ],
)
def test_what_is_not_a_decodable_photo_is_refused_and_not_stored(blobs: BlobStore, upload: bytes) -> None:
    with pytest.raises(NotAnImage):
        blobs.put_photo("users/1/photos/bad.jpg", upload)
    assert blobs.list() == []


def test_pixel_limit_is_configurable(blobs: BlobStore) -> None:
    small = LocalBlobStore(blobs.root, max_pixels=799)
    with pytest.raises(NotAnImage, match="too large"):
        small.put_photo("users/1/photos/a.jpg", encode(two_tone(40, 20), "PNG"))
    fits = LocalBlobStore(blobs.root, max_pixels=800)
    assert fits.put_photo("users/1/photos/a.jpg", encode(two_tone(40, 20), "PNG")).key == "users/1/photos/a.png"


def test_multi_picture_jpeg_from_phones_is_stored_as_jpeg(blobs: BlobStore) -> None:
    upload = encode(two_tone(), "MPO", save_all=True, append_images=[two_tone()], exif=exif_with_gps())
    with Image.open(io.BytesIO(upload)) as original:
        assert original.format == "MPO"

    stored = blobs.put_photo("users/1/photos/mpo", upload)

    assert (stored.key, stored.mime) == ("users/1/photos/mpo.jpg", "image/jpeg")
    with Image.open(blobs.path(stored.key)) as clean:
        assert clean.format == "JPEG" and len(clean.getexif()) == 0
