"""Portrait styles as data: one TOML file per style.

Built-in styles live in ``pipeline/styles/*.toml``; an operator adds or overrides styles (same
``name``) with ``.toml`` files in ``FACECHAIN_STYLES_DIR``. A style file::

    name = "fairy_tale"                 # id: lower-case letters, digits, _ and -
    title = "Fairy tale"                # optional display name
    description = "Soft light, flowers and a flowing gown."
    prompt = "a fairy in a field of flowers, ..."
    negative_prompt = ""                # optional, added before FaceChain's negative prompt
    lora = "modelscope:YorickHe/fairy_lora@v1.0.0/fairy.safetensors"   # optional
    style_weight = 0.25                 # the style LoRA's multiplier
    face_weight = 0.95                  # the face LoRA's multiplier
    default_enabled = true              # on for a new community until an admin changes it
    preview = "previews/fairy.jpg"      # optional picture shown in the style list

``lora`` is a model reference (``modelscope:``/``hf:`` repo + file, fetched by ``models fetch``) or
a path to a ``.safetensors`` file, relative to the style file. This module imports no torch.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import WorkerSettings
from pipeline.jobs import StyleSpec

BUILTIN_DIR = Path(__file__).with_name("styles")
_SCHEMES = ("modelscope:", "ms:", "hf:", "huggingface:", "file:")


class StyleFileError(ValueError):
    """A style file that cannot be used; the message names the file."""


class Style(BaseModel):
    """One style as read from its file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    title: str = Field(default="", max_length=100)
    description: str = Field(default="", max_length=500)
    prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str = Field(default="", max_length=2000)
    lora: str | None = Field(default=None, max_length=512)
    style_weight: float = Field(default=0.3, ge=0.0, le=2.0)
    face_weight: float = Field(default=0.9, ge=0.0, le=2.0)
    default_enabled: bool = True
    preview: str | None = None

    @property
    def display_name(self) -> str:
        """``title``, or the name made readable."""
        return self.title or self.name.replace("_", " ").replace("-", " ").capitalize()


def read_style(path: Path) -> Style:
    """Parse one style file; a relative ``lora``/``preview`` path is made absolute (``file:`` for lora)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StyleFileError(f"{path}: {exc}") from None
    lora = data.get("lora")
    if isinstance(lora, str) and lora and not lora.lower().startswith(_SCHEMES):
        local = Path(lora).expanduser()
        data["lora"] = "file:" + str(local if local.is_absolute() else (path.parent / local).resolve())
    preview = data.get("preview")
    if isinstance(preview, str) and preview and "://" not in preview and not Path(preview).is_absolute():
        data["preview"] = str((path.parent / preview).resolve())
    try:
        return Style.model_validate(data)
    except ValidationError as exc:
        raise StyleFileError(f"{path}: {exc}") from None


def _read_dir(folder: Path) -> dict[str, Style]:
    styles: dict[str, Style] = {}
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.toml")):
        style = read_style(path)
        if style.name in seen:
            raise StyleFileError(f"{path}: style {style.name!r} is already defined in {seen[style.name]}")
        seen[style.name] = path
        styles[style.name] = style
    return styles


def load_styles(settings: WorkerSettings) -> dict[str, Style]:
    """Built-in styles, then ``settings.styles_dir`` (whose files replace built-ins of the same name)."""
    return load_styles_from(settings.styles_dir)


def load_styles_from(styles_dir: Path | None) -> dict[str, Style]:
    """Built-in styles, then those in ``styles_dir`` (the bot process calls this with its own setting)."""
    styles = _read_dir(BUILTIN_DIR)
    if styles_dir is not None:
        if not styles_dir.is_dir():
            raise StyleFileError(f"FACECHAIN_STYLES_DIR {styles_dir} is not a directory")
        styles.update(_read_dir(styles_dir))
    return styles


def style_to_spec(style: Style) -> StyleSpec:
    """The job-contract form of a style, as the bot sends it to a worker."""
    return StyleSpec(
        name=style.name,
        prompt=style.prompt,
        negative_prompt=style.negative_prompt,
        lora=style.lora,
        style_weight=style.style_weight,
        face_weight=style.face_weight,
    )
