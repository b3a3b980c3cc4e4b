"""A style's preview picture (``preview`` in its style file) is shown with the style lists."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.style_files import write_style_with_preview
from tests.telegram.conftest import Harness
from tests.telegram.users import TgUser


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    write_style_with_preview(tmp_path / "styles", "noir_film", (20, 20, 20))
    return {"styles_dir": tmp_path / "styles"}


async def test_styles_come_with_their_pictures(bot: Harness, alice: TgUser) -> None:
    alice.say("/styles")
    listing = await alice.expect("Styles you can use")
    assert "noir_film: Grainy black and white" in listing.shown
    picture = await alice.expect("What noir_film looks like.")
    assert picture.photo is not None, "the preview is a photo, its caption names the style"
    assert b"SecretCam" not in picture.photo, "the picture went through the same cleaning as uploads"
    with Image.open(io.BytesIO(picture.photo)) as shown:
        assert shown.size == (64, 48)
