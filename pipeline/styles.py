"""Portrait styles as data: one TOML file per style.

Built-in styles live in ``pipeline/styles/*.toml``; an operator adds or overrides styles (same
``name``) with ``.toml`` files in ``FACECHAIN_STYLES_DIR``. A style file::

    name = "fairy_tale"                 # id: lower-case letters, digits, _ and -
    title = "Fairy tale"                # optional display name
    description = "Soft light, flowers and a flowing gown."
    prompt = "a fairy in a field of flowers, ..."
    trigger_words = ""                  # optional: the style LoRA's trigger words, put first
    negative_prompt = ""                # optional, added before FaceChain's negative prompt
    medium = "photo"                    # or "painting": no photo words in the prompt, and
                                        # "paintings, sketches" leave the negative prompt
    lora = "modelscope:YorickHe/fairy_lora@v1.0.0/fairy.safetensors"   # optional
    style_weight = 0.25                 # the style LoRA's multiplier (default: pipeline/recipe.py)
    face_weight = 0.95                  # the face LoRA's multiplier (default: pipeline/recipe.py)
    default_enabled = true              # on for a new community until an admin changes it
    preview = "previews/fairy.jpg"      # optional picture shown in the style list

``lora`` is a model reference (``modelscope:``/``hf:`` repo + file, fetched by ``models fetch`` into
FACECHAIN_MODELS_DIR) or a path to a ``.safetensors`` file, relative to the style file. A path must
resolve (symlinks followed) inside FACECHAIN_MODELS_DIR or FACECHAIN_STYLES_DIR: a style file that
points elsewhere (``../../etc/…``, ``/home/…``) is refused with one line naming it, and the other
styles still load. This module imports no torch.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import WorkerSettings
from pipeline.jobs import StyleSpec, is_model_reference
from pipeline.recipe import FACECHAIN, Medium

log = logging.getLogger("facechain.styles")

BUILTIN_DIR = Path(__file__).with_name("styles")


class StyleFileError(ValueError):
    """A style file that cannot be used; the message names the file."""


def lora_roots(models_dir: Path | None, styles_dir: Path | None) -> tuple[Path, ...]:
    """The folders a style's LoRA file may be in: FACECHAIN_MODELS_DIR and FACECHAIN_STYLES_DIR."""
    return tuple(folder for folder in (models_dir, styles_dir) if folder is not None)


def outside_roots(path: Path, roots: Iterable[Path]) -> str | None:
    """None when ``path`` (symlinks resolved) lies inside one of ``roots``; else why not, in words."""
    real = path.expanduser().resolve()
    folders = list(roots)
    if any(real.is_relative_to(folder.expanduser().resolve()) for folder in folders):
        return None
    where = " and ".join(str(folder) for folder in folders) or "no folder (neither is set)"
    return f"{real} is outside FACECHAIN_MODELS_DIR and FACECHAIN_STYLES_DIR ({where})"


class Style(BaseModel):
    """One style as read from its file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    title: str = Field(default="", max_length=100)
    description: str = Field(default="", max_length=500)
    prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str = Field(default="", max_length=2000)
    trigger_words: str = Field(default="", max_length=300)
    medium: Medium = "photo"
    lora: str | None = Field(default=None, max_length=512)
    style_weight: float = Field(default=FACECHAIN.style_weight, ge=0.0, le=2.0)
    face_weight: float = Field(default=FACECHAIN.face_weight, ge=0.0, le=2.0)
    default_enabled: bool = True
    preview: str | None = None

    @property
    def display_name(self) -> str:
        """``title``, or the name made readable."""
        return self.title or self.name.replace("_", " ").replace("-", " ").capitalize()


def read_style(path: Path, lora_dirs: Iterable[Path] | None = None) -> Style:
    """Parse one style file; a relative ``lora``/``preview`` path is made absolute (``file:`` for lora).

    With ``lora_dirs`` (see :func:`lora_roots`), a ``lora`` file path must resolve inside one of them.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StyleFileError(f"{path}: {exc}") from None
    lora = data.get("lora")
    if isinstance(lora, str) and lora:
        if lora.lower().startswith("file:") or not is_model_reference(lora):
            local = Path(lora[5:] if lora.lower().startswith("file:") else lora).expanduser()
            target = (local if local.is_absolute() else path.parent / local).resolve()
            problem = None if lora_dirs is None else outside_roots(target, lora_dirs)
            if problem is not None:
                raise StyleFileError(f"{path}: lora {lora[:200]!r} refused: {problem}; move the file into one of them")
            data["lora"] = f"file:{target}"
        else:
            parts = lora.partition(":")[2].strip("/").split("/")
            if len(parts) < 3 or any(part in ("", ".", "..") for part in parts):
                raise StyleFileError(
                    f"{path}: lora {lora[:200]!r} refused: a model reference is scheme:owner/name[@revision]/file "
                    "with no '.', '..' or empty part"
                )
    preview = data.get("preview")
    if isinstance(preview, str) and preview and "://" not in preview and not Path(preview).is_absolute():
        data["preview"] = str((path.parent / preview).resolve())
    try:
        return Style.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise StyleFileError(f"{path}: {problems}") from None


@dataclass(frozen=True)
class Catalogue:
    """The styles that loaded, and one line per style file refused (the others load regardless)."""

    styles: dict[str, Style]
    refused: tuple[str, ...] = ()


def _read_dir(folder: Path, lora_dirs: tuple[Path, ...], refused: list[str]) -> dict[str, Style]:
    styles: dict[str, Style] = {}
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            style = read_style(path, lora_dirs)
            if style.name in seen:
                raise StyleFileError(f"{path}: style {style.name!r} is already defined in {seen[style.name]}")
        except StyleFileError as exc:
            refused.append(f"style file refused: {exc}")
            continue
        seen[style.name] = path
        styles[style.name] = style
    return styles


def load_catalogue(styles_dir: Path | None, models_dir: Path | None) -> Catalogue:
    """Built-in styles, then those in ``styles_dir`` (whose files replace built-ins of the same name).

    A style file that cannot be used (bad TOML or field, a duplicate name, a ``lora`` path outside
    ``models_dir`` and ``styles_dir``) is left out with a line in :attr:`Catalogue.refused`; a
    ``styles_dir`` that is not a folder raises :class:`StyleFileError` (a setting to fix).
    """
    refused: list[str] = []
    lora_dirs = lora_roots(models_dir, styles_dir)
    styles = _read_dir(BUILTIN_DIR, lora_dirs, refused)
    if styles_dir is not None:
        if not styles_dir.is_dir():
            raise StyleFileError(f"FACECHAIN_STYLES_DIR {styles_dir} is not a directory")
        styles.update(_read_dir(styles_dir, lora_dirs, refused))
    return Catalogue(styles, tuple(refused))


def load_styles(settings: WorkerSettings) -> dict[str, Style]:
    """The catalogue of this worker's settings; refused style files are logged, one line each."""
    return load_styles_from(settings.styles_dir, settings.models_dir)


def load_styles_from(styles_dir: Path | None, models_dir: Path | None) -> dict[str, Style]:
    """The catalogue for these folders (the bot calls this with its own settings); refusals are logged."""
    catalogue = load_catalogue(styles_dir, models_dir)
    for line in catalogue.refused:
        log.warning("%s", line)
    return catalogue.styles


def style_to_spec(style: Style) -> StyleSpec:
    """The job-contract form of a style, as the bot sends it to a worker."""
    return StyleSpec.model_validate(style, from_attributes=True)
