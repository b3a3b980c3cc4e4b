"""Style files, and the stdlib-only LoRA file validator the bot runs on uploads."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipeline.jobs import StyleSpec
from pipeline.lora_files import InvalidLoraFile, is_lora_tensor_name, validate_lora_file
from pipeline.models import default_model_names, parse_hub_ref
from pipeline.styles import (
    BUILTIN_DIR,
    Style,
    StyleFileError,
    load_catalogue,
    load_styles,
    read_style,
    style_to_spec,
)
from tests.pipeline.tiny import kohya_lora_file, random_lora_file, tiny_settings

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ styles
def test_every_builtin_style_loads_and_converts(tmp_path: Path) -> None:
    styles = load_styles(tiny_settings("unused", tmp_path))

    assert 8 <= len(styles) <= 12
    assert len(styles) == len(list(BUILTIN_DIR.glob("*.toml")))
    for name, style in styles.items():
        spec = style_to_spec(style)
        assert isinstance(spec, StyleSpec) and spec.name == name
        assert spec.prompt == style.prompt and style.description and style.display_name
        assert 0.2 <= spec.style_weight <= 0.35 and 0.85 <= spec.face_weight <= 0.95, name
        if spec.lora is not None:
            ref = parse_hub_ref(spec.lora)
            assert ref is not None and ref.subpath.endswith(".safetensors"), spec.lora
    assert {"business_suit", "hanfu", "cyberpunk", "watercolor", "wedding"} <= styles.keys()
    assert any(s.lora for s in styles.values()) and any(not s.lora for s in styles.values())
    assert any(s.default_enabled for s in styles.values())


def test_styles_dir_adds_and_overrides(tmp_path: Path) -> None:
    folder = tmp_path / "styles"
    (folder / "loras").mkdir(parents=True)
    (folder / "mine.toml").write_text(
        'name = "neon_noir"\ndescription = "x"\nprompt = "neon noir"\nlora = "loras/noir.safetensors"\n'
        'style_weight = 0.3\npreview = "noir.jpg"\n'
    )
    (folder / "suit.toml").write_text('name = "business_suit"\nprompt = "a cheaper suit"\ndefault_enabled = false\n')

    styles = load_styles(tiny_settings("unused", tmp_path, styles_dir=folder))

    assert styles["neon_noir"].lora == f"file:{(folder / 'loras' / 'noir.safetensors').resolve()}"
    assert styles["neon_noir"].preview == str((folder / "noir.jpg").resolve())
    assert styles["business_suit"].prompt == "a cheaper suit"
    assert styles["business_suit"].default_enabled is False
    assert "hanfu" in styles
    assert style_to_spec(styles["neon_noir"]).lora == styles["neon_noir"].lora


# ---------------------------------------------------------------------- where a style's LoRA may be
def _style(folder: Path, name: str, lora: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\nprompt = "a {name} portrait"\nlora = "{lora}"\n')
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(models dir, styles dir, a folder outside both) with a LoRA-named file in each."""
    folders = tuple(tmp_path / name for name in ("models", "styles", "elsewhere"))
    for folder in folders:
        (folder / "loras").mkdir(parents=True)
        (folder / "loras" / "x.safetensors").write_bytes(b"x")
    return folders  # type: ignore[return-value]


def test_style_lora_paths_may_point_into_the_models_or_styles_dir(dirs: tuple[Path, Path, Path]) -> None:
    models, styles, _ = dirs
    _style(styles, "relative", "loras/x.safetensors")
    _style(styles, "in_models", str(models / "loras" / "x.safetensors"))
    _style(styles, "file_scheme", f"file:{models / 'loras' / 'x.safetensors'}")
    _style(styles, "hub", "modelscope:someone/style_lora@v1/x.safetensors")
    (styles / "loras" / "linked.safetensors").symlink_to(models / "loras" / "x.safetensors")
    _style(styles, "link_to_models", "loras/linked.safetensors")

    catalogue = load_catalogue(styles, models)

    assert catalogue.refused == ()
    assert catalogue.styles["relative"].lora == f"file:{(styles / 'loras' / 'x.safetensors').resolve()}"
    assert catalogue.styles["in_models"].lora == catalogue.styles["file_scheme"].lora
    assert catalogue.styles["link_to_models"].lora == f"file:{(models / 'loras' / 'x.safetensors').resolve()}"


@pytest.mark.parametrize(
    "lora",
    [
        "../elsewhere/loras/x.safetensors",
        "../../../../../../etc/passwd",
        "{elsewhere}/loras/x.safetensors",
        "file:{elsewhere}/loras/x.safetensors",
        "loras/escape.safetensors",  # a symlink in the styles dir to a file outside
        "modelscope:someone/style_lora@v1/../../../elsewhere/x.safetensors",
        "hf:someone/style_lora",  # no file
    ],
)
def test_a_style_file_whose_lora_points_elsewhere_is_refused_and_the_others_load(
    dirs: tuple[Path, Path, Path], lora: str, caplog: pytest.LogCaptureFixture
) -> None:
    models, styles, elsewhere = dirs
    (styles / "loras" / "escape.safetensors").symlink_to(elsewhere / "loras" / "x.safetensors")
    bad = _style(styles, "sneaky", lora.format(elsewhere=elsewhere))
    _style(styles, "fine", "loras/x.safetensors")

    styles_loaded = load_styles(tiny_settings("unused", models.parent, models_dir=models, styles_dir=styles))

    assert "sneaky" not in styles_loaded and "fine" in styles_loaded and "hanfu" in styles_loaded
    [line] = [r.getMessage() for r in caplog.records if r.name == "facechain.styles"]
    assert line.startswith("style file refused: ") and str(bad) in line and "\n" not in line
    assert "refused" in line.removeprefix("style file refused: ")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('name = "x"\nprompt = ', "x.toml"),  # broken TOML
        ('name = "Bad Name"\nprompt = "p"\n', "name"),
        ('name = "ok"\nprompt = "p"\nstyle_weight = 5\n', "style_weight"),
        ('name = "ok"\nprompt = "p"\ncolour = "red"\n', "colour"),
        ('name = "ok"\n', "prompt"),
    ],
)
def test_bad_style_files_name_the_file_and_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(content)
    with pytest.raises(StyleFileError, match=message) as caught:
        read_style(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value) and "errors.pydantic.dev" not in str(caught.value), "one line, no links"


def test_a_style_file_with_several_missing_fields_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('id = "mine"\n')
    with pytest.raises(StyleFileError) as caught:
        read_style(path)
    assert str(caught.value) == (
        f"{path}: name: Field required; prompt: Field required; id: Extra inputs are not permitted"
    )


def test_duplicate_style_names_in_one_folder_are_refused(tmp_path: Path) -> None:
    for file, prompt in (("a.toml", "first"), ("b.toml", "second")):
        (tmp_path / file).write_text(f'name = "same"\nprompt = "{prompt}"\n')

    catalogue = load_catalogue(tmp_path, tmp_path / "models")

    assert catalogue.styles["same"].prompt == "first"
    [line] = catalogue.refused
    assert str(tmp_path / "b.toml") in line and "already defined" in line


def test_default_model_names_list_the_base_model_and_style_loras(tmp_path: Path) -> None:
    names = default_model_names(tiny_settings("ly261666/cv_portrait_model", tmp_path))

    assert names[0] == "ly261666/cv_portrait_model"
    assert "modelscope:YorickHe/fairy_lora@v1.0.0/fairy.safetensors" in names
    assert len(names) == len(set(names))


def test_style_model_has_the_spec_fields() -> None:
    # lora_key is a community style's uploaded LoRA: never in a style file.
    assert set(StyleSpec.model_fields) - {"lora_key"} <= set(Style.model_fields)


# ------------------------------------------------------------------------------------- LoRA files
def _safetensors_bytes(header: dict[str, object], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_accepts_diffusers_and_kohya_loras(tiny_pipe: object, tmp_path: Path) -> None:
    diffusers_file = random_lora_file(tiny_pipe, tmp_path / "d.safetensors", seed=0)
    kohya_file = kohya_lora_file(tiny_pipe, tmp_path / "k.safetensors", seed=0)

    validate_lora_file(diffusers_file, max_bytes=10_000_000)
    validate_lora_file(kohya_file, max_bytes=10_000_000)
    validate_lora_file(diffusers_file.read_bytes(), max_bytes=10_000_000)
    validate_lora_file(str(kohya_file), max_bytes=10_000_000)


@pytest.mark.parametrize(
    "name",
    [
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight",
        "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.lora.up.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.lora_B.default.weight",
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
        "unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
        "lora_unet_mid_block_attentions_0_proj_in.alpha",
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
    ],
)
def test_lora_tensor_names(name: str) -> None:
    assert is_lora_tensor_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "down_blocks.0.resnets.0.conv1.weight",
        "emb_params",
        "random.tensor",
        "lora_unet_x.hada_w1_a",
        "vae.encoder.lora_A.weight",
    ],
)
def test_non_lora_tensor_names(name: str) -> None:
    assert not is_lora_tensor_name(name)


def test_rejects_pickles_under_any_name(tmp_path: Path) -> None:
    zipped = tmp_path / "lora.bin"
    torch.save({"unet.x.lora_A.weight": torch.zeros(2)}, zipped)
    legacy = tmp_path / "lora.pt"
    torch.save({"unet.x.lora_A.weight": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    disguised = tmp_path / "lora.safetensors"
    disguised.write_bytes(zipped.read_bytes())

    for path in (zipped, legacy, disguised):
        with pytest.raises(InvalidLoraFile) as caught:
            validate_lora_file(path, max_bytes=10_000_000)
        assert caught.value.code == "not_safetensors", path
        assert "PyTorch" in str(caught.value)


def test_rejects_a_renamed_text_file_and_tiny_files(tmp_path: Path) -> None:
    text = tmp_path / "style.safetensors"
    text.write_text("this is not a LoRA, just some notes about one\n" * 10)
    for source in (text, b"", b"1234", b"\xff" * 16):
        with pytest.raises(InvalidLoraFile) as caught:
            validate_lora_file(source, max_bytes=10_000_000)
        assert caught.value.code == "not_safetensors"


def test_rejects_random_tensor_names_and_full_checkpoints(tmp_path: Path) -> None:
    random_names = tmp_path / "random.safetensors"
    save_file({"foo.bar": torch.zeros(4), "weights": torch.ones(2, 2)}, str(random_names))
    checkpoint = tmp_path / "checkpoint.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 4)}, str(checkpoint))
    up_only = tmp_path / "up_only.safetensors"
    save_file({"unet.down_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(4, 4)}, str(up_only))
    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty))

    for path in (random_names, checkpoint, up_only, empty):
        with pytest.raises(InvalidLoraFile) as caught:
            validate_lora_file(path, max_bytes=10_000_000)
        assert caught.value.code == "bad_tensor_names", path


def test_rejects_oversize_files_before_reading_them(tiny_pipe: object, tmp_path: Path) -> None:
    lora = random_lora_file(tiny_pipe, tmp_path / "big.safetensors", seed=0)
    size = os.path.getsize(lora)

    with pytest.raises(InvalidLoraFile) as caught:
        validate_lora_file(lora, max_bytes=size - 1)
    assert caught.value.code == "too_large"
    with pytest.raises(InvalidLoraFile, match="too_large"):
        validate_lora_file(lora.read_bytes(), max_bytes=size - 1)
    validate_lora_file(lora, max_bytes=size)


@pytest.mark.parametrize(
    ("header", "data"),
    [
        ({"unet.a.lora_A.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
        ({"unet.a.lora_A.weight": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
        ({"unet.a.lora_A.weight": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
        ({"unet.a.lora_A.weight": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, b"\0" * 8),
        ({"unet.a.lora_A.weight": [1, 2]}, b""),
        ({"__metadata__": {"format": 1}}, b""),
        (
            {
                "unet.a.lora_A.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "unet.a.lora_B.weight": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
        ),
    ],
)
def test_rejects_corrupt_headers(header: dict[str, object], data: bytes) -> None:
    with pytest.raises(InvalidLoraFile) as caught:
        validate_lora_file(_safetensors_bytes(header, data), max_bytes=10_000)
    assert caught.value.code == "bad_header"


def test_broken_json_header_is_bad_header() -> None:
    raw = b'{"unet.a.lora_A.weight": {"dtype": "F32",'
    with pytest.raises(InvalidLoraFile) as caught:
        validate_lora_file(struct.pack("<Q", len(raw)) + raw + b"\0" * 8, max_bytes=10_000)
    assert caught.value.code == "bad_header"


def test_the_bot_side_modules_import_without_torch() -> None:
    code = (
        "import sys; import pipeline.lora_files, pipeline.styles, pipeline.models; "
        "heavy = {'torch', 'diffusers', 'transformers', 'peft'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
