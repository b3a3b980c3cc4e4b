"""``models make-tiny``: the tiny base model and a tiny LoRA for every style, where ``models fetch`` puts
the real ones, in the real formats, loaded by the production loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.numpy import load_file

from pipeline.generate import PortraitGenerator
from pipeline.lora_files import read_safetensors_header, validate_lora_file
from pipeline.lora_merge import read_lora_layers
from pipeline.models import load_base_pipeline, model_file_path, resolve_style_lora
from pipeline.styles import load_styles, style_to_spec
from pipeline.tiny_models import TINY_WRITERS, TinyResult, TinyTarget, is_tiny_file, make_tiny
from tests.pipeline.tiny import tiny_settings

pytestmark = pytest.mark.slow

NEON = 'name = "neon"\nprompt = "neon city"\nlora = "modelscope:someone/neon_lora@v2/neon.safetensors"\n'


@pytest.fixture(scope="module")
def route(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """make-tiny into a fresh models folder, with one extra style file; (models dir, styles dir)."""
    tmp = tmp_path_factory.mktemp("route")
    styles = tmp / "styles"
    styles.mkdir()
    (styles / "neon.toml").write_text(NEON)
    make_tiny(tiny_settings("unused", tmp, styles_dir=styles), tmp / "models")
    return tmp / "models", styles


def test_every_style_gets_a_lora_where_fetch_puts_it_and_the_base_model_applies_it(
    route: tuple[Path, Path], tmp_path: Path
) -> None:
    models, styles = route
    settings = tiny_settings(models / "tiny-sd", tmp_path, models_dir=models, styles_dir=styles)
    catalogue = load_styles(settings)
    with_lora = {name: style.lora for name, style in catalogue.items() if style.lora}
    assert {"fairy_tale", "film_retro", "hanfu", "school_uniform", "wedding", "winter_snow", "neon"} <= set(with_lora)
    pipe = load_base_pipeline(settings, "cpu", torch.float32)
    attention_layers = sum(
        1 for name, _ in pipe.unet.named_modules() if name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v")
    )
    for name, reference in with_lora.items():
        path = resolve_style_lora(settings, name, reference)
        assert path == model_file_path(models, reference), "at the path `models fetch` writes"
        validate_lora_file(path, max_bytes=10_000_000)  # the upload checks accept it too
        header = read_safetensors_header(path)
        assert all(key.startswith(("lora_unet_", "lora_te_")) for key in header if key != "__metadata__"), "kohya"
        layers = read_lora_layers(pipe, path)
        assert {layer.part for layer in layers} == {"unet", "text_encoder"}
        assert sum(1 for layer in layers if layer.part == "unet") == attention_layers * 4 // 3  # + to_out.0

    generator = PortraitGenerator(pipe, settings)
    face = model_file_path(models, with_lora["hanfu"])  # any LoRA of this shape serves as the face
    spec = style_to_spec(load_styles(settings)["hanfu"])
    kwargs = {"trigger": "a woman", "count": 1, "candidates": 1, "seed": 3}
    styled = generator.generate(face, spec, model_file_path(models, with_lora["neon"]), **kwargs)  # type: ignore[arg-type]
    plain = generator.generate(face, spec, None, **kwargs)  # type: ignore[arg-type]
    assert styled[0].image.tobytes() != plain[0].image.tobytes(), "the tiny style LoRA changes the picture"


def test_make_tiny_never_overwrites_a_real_download_and_rewrites_its_own(tmp_path: Path) -> None:
    models = tmp_path / "models"
    settings = tiny_settings("unused", tmp_path, models_dir=models)
    real = model_file_path(models, load_styles(settings)["hanfu"].lora or "")
    real.parent.mkdir(parents=True)
    real.write_bytes(b"the real 144 MB file")
    tiny = model_file_path(models, load_styles(settings)["wedding"].lora or "")

    first = make_tiny(settings)
    written_once = load_file(tiny)
    second = make_tiny(settings)

    assert real.read_bytes() == b"the real 144 MB file" and not is_tiny_file(real)
    for route in (first, second):
        notes = [note for result in route.results for note in result.notes]
        assert any("style hanfu: kept" in note and str(real) in note for note in notes)
        assert route.settings["FACECHAIN_MODELS_DIR"] == str(models.resolve())
        assert route.settings["FACECHAIN_BASE_MODEL"] == str(models.resolve() / "tiny-sd")
    again = load_file(tiny)
    assert is_tiny_file(tiny) and again.keys() == written_once.keys()
    assert all((again[k] == written_once[k]).all() for k in again), "its own files are written again, the same"


def test_a_tiny_writer_appended_to_the_list_builds_on_the_base_model(tmp_path: Path) -> None:
    # How the stage models plug in: one more writer, given what the earlier writers produced.
    seen: list[TinyTarget] = []

    def write_stage_model(target: TinyTarget) -> TinyResult:
        seen.append(target)
        folder = target.models_dir / "someone" / "stage_model"
        folder.mkdir(parents=True)
        (folder / "configuration.json").write_text("{}")
        return TinyResult(written=[(folder, "a tiny stage model")], settings={"FACECHAIN_SOME_STAGE": "true"})

    route = make_tiny(tiny_settings("unused", tmp_path), tmp_path / "m", writers=[*TINY_WRITERS, write_stage_model])

    [target] = seen
    assert (target.produced["base_model"] / "model_index.json").is_file()
    assert route.settings["FACECHAIN_SOME_STAGE"] == "true" and "FACECHAIN_BASE_MODEL" in route.settings
    assert route.results[-1].written == [(tmp_path.resolve() / "m" / "someone" / "stage_model", "a tiny stage model")]
