"""``facechain-bot models make-tiny``: tiny random-weight models in the real formats, where the real ones go.

The tiny route runs the whole product with no download and no GPU: every file is written at the path
``models fetch`` would put the real one, in the real on-disk format, so the same loaders read it. Its
images are noise. make-tiny is a list of *tiny writers* (:data:`TINY_WRITERS`), run in order: each
gets a :class:`TinyTarget` (the models folder, the style catalogue, what earlier writers wrote) and
returns a :class:`TinyResult` (files written, files it left alone, settings the route needs). To
add tiny models for another stage, write one function and append it to the list.

A file make-tiny writes is marked as tiny (safetensors metadata ``facechain_tiny``); a file at the
same path without the mark (a real download) is never overwritten, and the result says so.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import WorkerSettings
from pipeline.lora_files import InvalidLoraFile, read_safetensors_header
from pipeline.models import make_tiny_pipeline, model_file_path
from pipeline.styles import Catalogue, load_catalogue

#: Folder of the tiny base model inside the models folder.
TINY_BASE_DIR = "tiny-sd"
#: safetensors metadata key that marks a file make-tiny wrote (and may write again).
TINY_MARK = "facechain_tiny"
#: Rank and scale of the tiny style LoRAs (small: a style nudges the image, like a real one).
TINY_LORA_RANK = 4
_TINY_LORA_SCALE = 0.05
#: The layers civitai/kohya style LoRAs adapt: attention projections of the UNet and the text encoder.
_UNET_ATTENTION = re.compile(r"\.attn\d\.(?:to_q|to_k|to_v|to_out\.0)$")
_TEXT_ATTENTION = re.compile(r"\.self_attn\.(?:q_proj|k_proj|v_proj|out_proj)$")


@dataclass(frozen=True)
class TinyTarget:
    """What a tiny writer writes for: the models folder, the style catalogue, earlier writers' files."""

    models_dir: Path
    catalogue: Catalogue
    #: Files earlier writers produced, by role (``"base_model"`` is the tiny diffusers folder).
    produced: dict[str, Path] = field(default_factory=dict)


@dataclass
class TinyResult:
    """What one writer did: files written (path, what), lines about what it did not write, settings."""

    written: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: FACECHAIN_* settings the tiny route needs for this writer's files.
    settings: dict[str, str] = field(default_factory=dict)
    #: Files later writers may build on, by role.
    produced: dict[str, Path] = field(default_factory=dict)


TinyWriter = Callable[[TinyTarget], TinyResult]


# --------------------------------------------------------------------------------------- base model
def write_tiny_base_model(target: TinyTarget) -> TinyResult:
    """The tiny SD 1.5-shaped diffusers pipeline, ``<models_dir>/tiny-sd``."""
    folder = make_tiny_pipeline(target.models_dir / TINY_BASE_DIR)
    return TinyResult(
        written=[(folder, "the tiny base model (a diffusers folder, random weights: its images are noise)")],
        settings={
            "FACECHAIN_BASE_MODEL": str(folder),
            # Noise has no faces: ranking by likeness would drop every candidate.
            "FACECHAIN_RANK_FACES": "false",
        },
        produced={"base_model": folder},
    )


# -------------------------------------------------------------------------------------- style LoRAs
def _attention_shapes(base_model: Path) -> dict[str, tuple[int, int]]:
    """kohya LoRA name → (out, in) of every attention projection the real style LoRAs adapt."""
    shapes: dict[str, tuple[int, int]] = {}
    unet = read_safetensors_header(base_model / "unet" / "diffusion_pytorch_model.safetensors")
    for key, entry in unet.items():
        module = key.removesuffix(".weight")
        if _UNET_ATTENTION.search(module) and len(entry["shape"]) == 2:
            shapes["lora_unet_" + module.replace(".", "_")] = tuple(entry["shape"])
    text = read_safetensors_header(base_model / "text_encoder" / "model.safetensors")
    for key, entry in text.items():
        module = key.removesuffix(".weight").removeprefix("text_model.")
        if _TEXT_ATTENTION.search(module) and len(entry["shape"]) == 2:
            shapes["lora_te_text_model_" + module.replace(".", "_")] = tuple(entry["shape"])
    return shapes


def tiny_style_lora(shapes: dict[str, tuple[int, int]], seed: int) -> dict[str, np.ndarray]:
    """A kohya-format LoRA (``lora_down``/``lora_up``/``alpha``, fp16 like civitai's files) for these layers."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, (out_features, in_features) in sorted(shapes.items()):
        down = rng.standard_normal((TINY_LORA_RANK, in_features)) * _TINY_LORA_SCALE
        up = rng.standard_normal((out_features, TINY_LORA_RANK)) * _TINY_LORA_SCALE
        tensors[f"{name}.lora_down.weight"] = down.astype(np.float16)
        tensors[f"{name}.lora_up.weight"] = up.astype(np.float16)
        tensors[f"{name}.alpha"] = np.asarray(float(TINY_LORA_RANK), dtype=np.float16)
    return tensors


def is_tiny_file(path: Path) -> bool:
    """True for a safetensors file make-tiny wrote (it may be written again)."""
    try:
        metadata = read_safetensors_header(path).get("__metadata__") or {}
    except (InvalidLoraFile, OSError):
        return False
    return metadata.get(TINY_MARK) == "1"


def write_tiny_style_loras(target: TinyTarget) -> TinyResult:
    """A tiny LoRA for every style of the catalogue whose ``lora`` is a hub reference, where ``models fetch``
    puts the real file, shaped for the tiny base model. A style's own file (``file:``) is left alone."""
    from safetensors.numpy import save_file

    base_model = target.produced.get("base_model")
    if base_model is None:
        raise RuntimeError("write_tiny_style_loras needs the tiny base model (write_tiny_base_model runs first)")
    shapes = _attention_shapes(base_model)
    result = TinyResult()
    for name, style in target.catalogue.styles.items():
        if style.lora is None:
            continue
        if style.lora.startswith("file:"):
            path = Path(style.lora[5:])
            state = "its own file" if path.is_file() else "its own file, which is MISSING"
            result.notes.append(f"style {name}: uses {state} {path} (make-tiny writes only hub references)")
            continue
        path = model_file_path(target.models_dir, style.lora)
        if path.exists() and not is_tiny_file(path):
            result.notes.append(
                f"style {name}: kept {path}, a real download (the tiny base model cannot load it; "
                "use another FACECHAIN_MODELS_DIR for the tiny route)"
            )
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {TINY_MARK: "1", "style": name, "base_model": str(base_model), "ss_network_dim": "4"}
        save_file(tiny_style_lora(shapes, zlib.crc32(name.encode())), str(path), metadata=metadata)
        result.written.append((path, f"a tiny LoRA for style {name} ({style.lora})"))
    return result


def write_tiny_stages(target: TinyTarget) -> TinyResult:
    """A tiny model for every stage that runs on this project's runtimes (:mod:`pipeline.stages.tiny`).

    A stage folder that ``models fetch`` filled (it holds the fetch manifest) is a real download and
    is left alone.
    """
    from pipeline.stage_models import BY_NAME, FETCH_MANIFEST
    from pipeline.stages import tiny

    writers: dict[str, Callable[[Path], Path]] = {
        "rot_bgr": lambda d: tiny.write_rot_bgr(d).parent,
        "flcm": tiny.write_flcm,
        "deepdanbooru": tiny.write_deepdanbooru,
        "fairface": tiny.write_fairface,
        "fqa": tiny.write_fqa,
    }
    result = TinyResult()
    for name, write in writers.items():
        model = BY_NAME[name]
        folder = model.local_dir(target.models_dir)
        if (folder / FETCH_MANIFEST).exists():
            result.notes.append(f"stage {model.stage}: kept {folder}, a real download")
            continue
        result.written.append((write(target.models_dir), f"a tiny {model.stage} model ({model.hub_ref})"))
    return result


#: make-tiny's writers, in order (a later writer may use what an earlier one produced).
TINY_WRITERS: list[TinyWriter] = [write_tiny_base_model, write_tiny_style_loras, write_tiny_stages]


@dataclass(frozen=True)
class TinyRoute:
    """What make-tiny did: the models folder, each writer's result, and style files the catalogue refused."""

    models_dir: Path
    results: list[TinyResult]
    refused_styles: tuple[str, ...] = ()

    @property
    def settings(self) -> dict[str, str]:
        """Every FACECHAIN_* setting the tiny route needs, FACECHAIN_MODELS_DIR first."""
        settings = {"FACECHAIN_MODELS_DIR": str(self.models_dir)}
        for result in self.results:
            settings.update(result.settings)
        return settings


def make_tiny(
    settings: WorkerSettings, models_dir: Path | None = None, writers: list[TinyWriter] | None = None
) -> TinyRoute:
    """Run the tiny writers (default :data:`TINY_WRITERS`) into ``models_dir`` (default: ``settings.models_dir``).

    The catalogue is the built-in styles plus ``settings.styles_dir``, as the worker and bot load it.
    """
    folder = (models_dir or settings.models_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue(settings.styles_dir, folder)
    target = TinyTarget(folder, catalogue)
    results: list[TinyResult] = []
    for writer in writers if writers is not None else TINY_WRITERS:
        result = writer(target)
        target.produced.update(result.produced)
        results.append(result)
    return TinyRoute(folder, results, catalogue.refused)
