"""Tiny random-weight Stable Diffusion models in the real on-disk formats, for the pipeline tests.

Builders write files (a diffusers folder, an original-layout single-file checkpoint, LoRA files in
diffusers and kohya naming) that the tests then load through the production loaders. Fixtures at
the bottom are session-scoped where building is slow; import them into a test module (or a
conftest) with ``from tests.pipeline.tiny import tiny_model_dir, ...``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from pipeline.config import WorkerSettings
from pipeline.generate import Candidate, PortraitGenerator
from pipeline.jobs import StyleSpec
from pipeline.models import make_tiny_pipeline

RESOLUTION = 64


def tiny_settings(base_model: Path | str, tmp: Path, **overrides: object) -> WorkerSettings:
    """Worker settings for the tiny model: CPU, fp32, 64 px, 2 steps, FaceChain's LoRA knobs."""
    values: dict[str, object] = {
        "base_model": str(base_model),
        "models_dir": tmp / "models",
        "data_dir": tmp / "data",
        "device": "cpu",
        "dtype": "fp32",
        "resolution": RESOLUTION,
        "inference_steps": 2,
        "candidates": 2,
        "generate_batch_size": 2,
        "steps_per_photo": 1,
        "max_train_steps": 3,
    }
    values.update(overrides)
    return WorkerSettings(_env_file=None, **values)  # type: ignore[call-arg]


def face_images(count: int = 3, size: int = RESOLUTION, seed: int = 0) -> list[Image.Image]:
    """Stand-in training photos: smooth random colour fields (content does not matter to the code)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        images.append(Image.fromarray(small).resize((size + 16, size + 8), Image.Resampling.BILINEAR))
    return images


# ------------------------------------------------------------------ single-file (LDM layout) checkpoint
_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _resnet(rest: str, table: tuple[tuple[str, str], ...] = _RESNET) -> str:
    for new, old in table:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def _unet_to_ldm(key: str, config: dict[str, object]) -> str:
    per = int(config["layers_per_block"]) + 1  # type: ignore[call-overload]
    up_types = list(config["up_block_types"])  # type: ignore[call-overload]
    for new, old in _UNET_FIXED.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + i * per + j
        return f"input_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = i * per + j
        return f"output_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        i = int(m[1])
        slot = 2 if up_types[i].startswith("CrossAttn") else 1
        return f"output_blocks.{i * per + per - 1}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {key}")


def _vae_to_ldm(key: str, tensor: torch.Tensor, levels: int) -> tuple[str, torch.Tensor]:
    nin = (("conv_shortcut", "nin_shortcut"),)
    for part in ("encoder", "decoder"):
        if key in (f"{part}.conv_norm_out.weight", f"{part}.conv_norm_out.bias"):
            return key.replace("conv_norm_out", "norm_out"), tensor
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_resnet(m[3], nin)}", tensor
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", tensor
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{_resnet(m[3], nin)}", tensor
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}", tensor
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_resnet(m[3], nin)}", tensor
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        rest = _resnet(m[2], _VAE_ATTN)
        if rest.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # the original VAE attention is 1×1 convolutions
        return f"{m[1]}.mid.attn_1.{rest}", tensor
    return key, tensor


def save_single_file(pipeline_dir: Path, out_file: Path) -> Path:
    """Write a diffusers SD folder as one original-layout (LDM / A1111) ``.safetensors`` checkpoint."""
    unet_config = json.loads((pipeline_dir / "unet" / "config.json").read_text())
    vae_config = json.loads((pipeline_dir / "vae" / "config.json").read_text())
    levels = len(vae_config["down_block_types"])
    state: dict[str, torch.Tensor] = {}
    for key, tensor in load_file(pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors").items():
        state["model.diffusion_model." + _unet_to_ldm(key, unet_config)] = tensor
    for key, tensor in load_file(pipeline_dir / "vae" / "diffusion_pytorch_model.safetensors").items():
        name, value = _vae_to_ldm(key, tensor, levels)
        state["first_stage_model." + name] = value
    for key, tensor in load_file(pipeline_dir / "text_encoder" / "model.safetensors").items():
        state["cond_stage_model.transformer.text_model." + key.removeprefix("text_model.")] = tensor
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_file))
    return out_file


# ------------------------------------------------------------------------------------ LoRA files
def random_lora_file(pipe: object, out_file: Path, seed: int, rank: int = 4, scale: float = 0.2) -> Path:
    """A diffusers-format UNet LoRA with random non-zero weights (a stand-in for a trained one)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = pipe.unet  # type: ignore[attr-defined]
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet.add_adapter(config, adapter_name="random_lora")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if ".random_lora." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name="random_lora"))
    unet.unload_lora()
    StableDiffusionPipeline.save_lora_weights(
        save_directory=out_file.parent,
        unet_lora_layers=state,
        weight_name=out_file.name,
        safe_serialization=True,
    )
    return out_file


def kohya_lora_file(pipe: object, out_file: Path, seed: int, rank: int = 4, text_encoder: bool = True) -> Path:
    """A UNet (+ text encoder) LoRA in kohya-ss naming (``lora_unet_…lora_down.weight``, ``alpha``)."""
    unet = pipe.unet  # type: ignore[attr-defined]
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear) or not re.search(r"attn\d\.(to_q|to_k|to_v|to_out\.0)$", name):
            continue
        base = "lora_unet_" + name.replace(".", "_")
        state[f"{base}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.3
        state[f"{base}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.3
        state[f"{base}.alpha"] = torch.tensor(float(rank))
    if text_encoder:
        for name, module in pipe.text_encoder.named_modules():  # type: ignore[attr-defined]
            if not isinstance(module, torch.nn.Linear) or not re.search(r"self_attn\.(q|k|v|out)_proj$", name):
                continue
            # kohya names the CLIP layers by the original (wrapped) module path.
            base = "lora_te_text_model_" + name.removeprefix("text_model.").replace(".", "_")
            state[f"{base}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.3
            state[f"{base}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.3
            state[f"{base}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(out_file))
    return out_file


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD pipeline saved in the diffusers layout (built once per test session)."""
    return make_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd") / "tiny-sd", seed=0)


@pytest.fixture
def tiny_env(tiny_model_dir: Path, tmp_path: Path) -> WorkerSettings:
    """Settings pointing at the tiny model (per test, so temp dirs do not leak between tests)."""
    return tiny_settings(tiny_model_dir, tmp_path)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The tiny pipeline loaded once through the production loader (like the resident worker's).

    Tests that use it must leave it clean (no adapters), which is what the code under test promises.
    """
    from pipeline.models import load_base_pipeline

    settings = tiny_settings(tiny_model_dir, tmp_path_factory.mktemp("tiny_pipe_env"))
    yield load_base_pipeline(settings, "cpu", torch.float32)


@pytest.fixture(scope="session")
def loras(tiny_pipe: object, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two face LoRAs (diffusers format) and a civitai-style kohya LoRA with text-encoder layers."""
    folder = tmp_path_factory.mktemp("loras")
    return {
        "face1": random_lora_file(tiny_pipe, folder / "face1.safetensors", seed=1),
        "face2": random_lora_file(tiny_pipe, folder / "face2.safetensors", seed=2),
        "style": kohya_lora_file(tiny_pipe, folder / "style.safetensors", seed=3),
    }


# ------------------------------------------------------------------------------------ generation
#: The style the generation tests use (with the ``loras`` fixture's kohya style LoRA).
STYLE = StyleSpec(name="business_suit", prompt="wearing a tailored business suit", style_weight=0.3, face_weight=0.9)


def generate_with(gen: PortraitGenerator, loras: dict[str, Path], face: str = "face1", **kw: object) -> list[Candidate]:
    """Three candidates (batches of 2) with ``loras[face]`` and the style LoRA, seed 11."""
    values: dict[str, object] = {
        "face_lora_path": loras[face],
        "style": STYLE,
        "style_lora_path": loras["style"],
        "trigger": "a handsome man",
        "count": 2,
        "candidates": 3,
        "seed": 11,
        "batch_size": 2,
    }
    values.update(kw)
    return gen.generate(**values)  # type: ignore[arg-type]


def max_pixel_diff(a: list[Candidate], b: list[Candidate]) -> int:
    """The largest difference of any pixel channel between two runs' candidates."""
    pixels = [[np.asarray(c.image, dtype=np.int16) for c in run] for run in (a, b)]
    return max(int(np.abs(x - y).max()) for x, y in zip(*pixels, strict=True))
