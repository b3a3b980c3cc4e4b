"""Fusing LoRA files straight into the resident weights (pipeline.lora_merge) against peft's own math."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipeline.lora_merge import (
    LayerLora,
    UnsupportedLora,
    WeightFuser,
    delta_weight,
    layers_from_state_dict,
    read_lora_layers,
)
from tests.pipeline.tiny import kohya_lora_file, random_lora_file

ATTN = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
CLIP = "text_model.encoder.layers.3"


@pytest.mark.parametrize(
    ("key", "module"),
    [
        (f"unet.{ATTN}.to_q.lora.down.weight", f"{ATTN}.to_q"),
        (f"unet.{ATTN}.to_out.0.lora_A.weight", f"{ATTN}.to_out.0"),
        (f"unet.{ATTN}.processor.to_out_lora.down.weight", f"{ATTN}.to_out.0"),
        (f"unet.{ATTN}.processor.to_k_lora.down.weight", f"{ATTN}.to_k"),
        (f"text_encoder.{CLIP}.self_attn.to_v_lora.down.weight", f"{CLIP}.self_attn.v_proj"),
        (f"text_encoder.{CLIP}.mlp.fc1.lora_linear_layer.down.weight", f"{CLIP}.mlp.fc1"),
        ("unet.down_blocks.0.resnets.0.conv1.lora.down.weight", "down_blocks.0.resnets.0.conv1"),
    ],
)  # fmt: skip
def test_every_naming_diffusers_hands_back_is_paired_with_its_layer(key: str, module: str) -> None:
    head, _, tail = key.rpartition("down") if "lora_A" not in key else key.rpartition("lora_A")
    up_key = head + ("up" if _ == "down" else "lora_B") + tail
    layers = layers_from_state_dict({key: torch.ones(4, 8), up_key: torch.ones(8, 4)})

    assert [(layer.part, layer.module, layer.rank) for layer in layers] == [(key.split(".")[0], module, 4)]


def test_scale_comes_from_network_alphas_then_metadata_else_one() -> None:
    state = {
        f"unet.{ATTN}.to_q.lora.down.weight": torch.ones(4, 8),
        f"unet.{ATTN}.to_q.lora.up.weight": torch.ones(8, 4),
    }

    assert layers_from_state_dict(state)[0].scale == 1.0
    assert layers_from_state_dict(state, {f"unet.{ATTN}.to_q.alpha": 2.0})[0].scale == 0.5
    assert layers_from_state_dict(state, None, {"unet.lora_alpha": 8, "unet.r": 4})[0].scale == 2.0
    pattern = {"lora_alpha": 8, "alpha_pattern": {f"{ATTN}.to_q": 1}}
    assert layers_from_state_dict(state, None, pattern)[0].scale == 0.25


def test_files_it_cannot_place_are_refused_whole() -> None:
    with pytest.raises(UnsupportedLora, match="not plain LoRA"):
        layers_from_state_dict({f"unet.{ATTN}.to_q.lora_magnitude_vector": torch.ones(8)})
    with pytest.raises(UnsupportedLora, match="lacks its up"):
        layers_from_state_dict({f"unet.{ATTN}.to_q.lora.down.weight": torch.ones(4, 8)})


@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_deltas_follow_pefts_formula(kernel: int) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    conv = torch.nn.Sequential(torch.nn.Conv2d(6, 10, kernel, padding=kernel // 2))
    model = inject_adapter_in_model(LoraConfig(r=3, lora_alpha=6, target_modules=["0"]), conv)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_()
    layer = model[0]
    ours = LayerLora("unet", "0", layer.lora_A["default"].weight, layer.lora_B["default"].weight, scale=2.0)

    expected = layer.get_delta_weight("default")
    assert torch.allclose(delta_weight(ours, layer.base_layer.weight.shape), expected, atol=1e-5)


def _unet_out(pipe: object, seed: int = 0) -> torch.Tensor:
    unet = pipe.unet  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    sample = torch.randn(1, unet.config.in_channels, size, size, generator=g)
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), hidden, return_dict=False)[0]


def test_fused_unet_equals_pefts_adapters_with_multipliers_and_restores_exactly(
    tiny_pipe: object, tmp_path: Path
) -> None:
    pipe = tiny_pipe
    face = random_lora_file(pipe, tmp_path / "face.safetensors", seed=5)
    style = kohya_lora_file(pipe, tmp_path / "style.safetensors", seed=6, text_encoder=False)
    # A kohya alpha of half the rank must halve the style's effect, as in peft.
    halved = {k: (v * 0.5 if k.endswith(".alpha") else v) for k, v in _load(style).items()}
    save_file(halved, str(tmp_path / "style_half.safetensors"))
    plain = _unet_out(pipe)

    pipe.load_lora_weights(str(tmp_path), weight_name="style_half.safetensors", adapter_name="style")  # type: ignore[attr-defined]
    pipe.load_lora_weights(str(tmp_path), weight_name="face.safetensors", adapter_name="face")  # type: ignore[attr-defined]
    pipe.set_adapters(["style", "face"], [0.4, 0.9])  # type: ignore[attr-defined]
    with_peft = _unet_out(pipe)
    pipe.unload_lora_weights()  # type: ignore[attr-defined]

    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}  # type: ignore[attr-defined]
    fuser = WeightFuser(pipe)  # type: ignore[arg-type]
    touched = fuser.fuse(
        [(read_lora_layers(pipe, tmp_path / "style_half.safetensors"), 0.4), (read_lora_layers(pipe, face), 0.9)]  # type: ignore[arg-type]
    )
    fused = _unet_out(pipe)
    fuser.restore()
    after = pipe.unet.state_dict()  # type: ignore[attr-defined]

    assert touched == 32  # q, k, v, out of the tiny UNet's 8 attention blocks; both files share them
    assert (with_peft - plain).abs().max() > 1e-2, "the LoRAs must change the output for this test to mean anything"
    assert torch.allclose(fused, with_peft, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert torch.equal(_unet_out(pipe), plain)


def test_a_file_that_does_not_fit_changes_no_weight(tiny_pipe: object) -> None:
    pipe = tiny_pipe
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}  # type: ignore[attr-defined]
    good = LayerLora("unet", f"{ATTN}.to_q", torch.ones(4, 32), torch.ones(32, 4), 1.0)
    wrong_shape = LayerLora("unet", f"{ATTN}.to_k", torch.ones(4, 7), torch.ones(32, 4), 1.0)
    missing = LayerLora("unet", "down_blocks.9.nothing", torch.ones(4, 8), torch.ones(8, 4), 1.0)
    fuser = WeightFuser(pipe)  # type: ignore[arg-type]

    for bad in (wrong_shape, missing):
        with pytest.raises(UnsupportedLora):
            fuser.fuse([([good, bad], 1.0)])
        assert not fuser.fused
        assert all(torch.equal(pipe.unet.state_dict()[k], before[k]) for k in before)  # type: ignore[attr-defined]


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
