"""Style files as an operator writes them in FACECHAIN_STYLES_DIR, for the adapters' tests."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image


def write_style_with_preview(folder: Path, name: str, colour: tuple[int, int, int]) -> None:
    """A style file in FACECHAIN_STYLES_DIR and its picture, which carries a camera's EXIF."""
    folder.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "JPEG", exif=exif)
    (folder / f"{name}.jpg").write_bytes(buffer.getvalue())
    (folder / f"{name}.toml").write_text(
        f'name = "{name}"\ndescription = "Grainy black and white"\nprompt = "film noir portrait"\n'
        f'preview = "{name}.jpg"\n'
    )
