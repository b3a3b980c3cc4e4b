"""The style catalogue as the bot offers it: the built-in style files plus FACECHAIN_STYLES_DIR."""

from __future__ import annotations

from pathlib import Path

from bot.service import StyleEntry
from pipeline.styles import load_styles_from, style_to_spec


def load_catalog(styles_dir: Path | None) -> dict[str, StyleEntry]:
    """Every file-defined style by name, in file order (community styles come from the database)."""
    return {
        name: StyleEntry(
            spec=style_to_spec(style),
            description=style.description or style.title,
            default_enabled=style.default_enabled,
        )
        for name, style in load_styles_from(styles_dir).items()
    }
