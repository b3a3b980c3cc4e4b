"""The style catalogue as the bot offers it: the built-in style files plus FACECHAIN_STYLES_DIR."""

from __future__ import annotations

import logging
from pathlib import Path

from bot.service import StyleEntry
from pipeline.styles import Style, load_styles_from, style_to_spec
from storage.blobs import BlobStore, InvalidBlobKey, NotAnImage

log = logging.getLogger("facechain.styles")

#: Where style pictures are kept in the blob store (a style's name follows).
PREVIEW_PREFIX = "styles/previews"


def load_catalog(
    styles_dir: Path | None, models_dir: Path | None, blobs: BlobStore | None = None
) -> dict[str, StyleEntry]:
    """Every file-defined style by name, in file order (community styles come from the database).

    A style file that cannot be used is left out with a warning line naming it (see
    :func:`pipeline.styles.load_catalogue`); ``models_dir`` and ``styles_dir`` bound its LoRA paths.
    With ``blobs``, each style's ``preview`` picture is cleaned into the blob store (where the chat
    adapters find pictures) and shown with the style list; a picture that cannot be used is named
    in one warning line and the style is listed without it.
    """
    return {
        name: StyleEntry(
            spec=style_to_spec(style),
            description=style.description or style.title,
            default_enabled=style.default_enabled,
            preview_key=_publish_preview(style, blobs) if blobs is not None else None,
        )
        for name, style in load_styles_from(styles_dir, models_dir).items()
    }


def _publish_preview(style: Style, blobs: BlobStore) -> str | None:
    if not style.preview:
        return None
    if "://" in style.preview:
        log.warning("style %s: preview %s is a URL; only a picture file next to the style file is shown", style.name,
                    style.preview[:200])  # fmt: skip
        return None
    try:
        data = Path(style.preview).read_bytes()
        return blobs.put_photo(f"{PREVIEW_PREFIX}/{style.name}", data).key
    except (OSError, NotAnImage, InvalidBlobKey) as exc:
        log.warning("style %s: preview %s not shown: %s", style.name, style.preview[:200], exc)
        return None
    except Exception as exc:  # a remote blob store's own errors: a picture must not stop the bot starting
        log.warning("style %s: preview not stored (%s: %s); listed without it", style.name, type(exc).__name__, exc)
        return None
