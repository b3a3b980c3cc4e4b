"""Untrusted LoRA files: NaN and infinite weights, too many tensors, too many dimensions are refused,
with the torch-free check the bot runs on uploads and on every load path of the worker."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_numpy
from safetensors.torch import save_file

from pipeline import jobs
from pipeline.generate import PortraitGenerator, has_lora_layers, read_lora
from pipeline.lora_files import (
    MAX_TENSORS,
    InvalidLoraFile,
    LoraFileError,
    has_non_finite,
    validate_lora_file,
)
from pipeline.lora_merge import read_lora_layers
from pipeline.runner import PipelineRunner
from storage.blobs import LocalBlobStore
from tests.pipeline.tiny import generate_with, tiny_settings

DOWN = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
UP = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight"
LIMIT = 100_000_000

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def lora_with(value: float, dtype: torch.dtype, *, size: int = 4096, at: int = 1234) -> dict[str, torch.Tensor]:
    """A two-tensor LoRA whose up weight holds ``value`` at element ``at``."""
    up = torch.linspace(-2.0, 2.0, size).to(dtype)
    up[at] = value
    return {DOWN: torch.full((4, 8), 0.5, dtype=dtype), UP: up.reshape(-1, 4)}


def save(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_a_nan_or_infinite_weight_is_refused_from_a_file_or_bytes(
    tmp_path: Path, dtype: torch.dtype, value: float
) -> None:
    path = save(lora_with(value, dtype), tmp_path / "bad.safetensors")

    for source in (path, path.read_bytes()):
        with pytest.raises(InvalidLoraFile) as caught:
            validate_lora_file(source, LIMIT)
        assert caught.value.code is LoraFileError.NON_FINITE
        assert UP in caught.value.detail and "NaN or infinite" in str(caught.value)
    assert caught.value.path is None, "bytes have no path"


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_extreme_but_finite_weights_pass(tmp_path: Path, dtype: torch.dtype) -> None:
    info = torch.finfo(dtype)
    tensors = lora_with(info.max, dtype)
    tensors[UP][0, :4] = torch.tensor([-info.max, info.tiny, -0.0, info.smallest_normal / 4], dtype=dtype)

    validate_lora_file(save(tensors, tmp_path / "extreme.safetensors"), LIMIT)


@pytest.mark.parametrize("dtype", [torch.float8_e5m2, torch.float8_e4m3fn], ids=str)
def test_eight_bit_floats_are_checked_too(tmp_path: Path, dtype: torch.dtype) -> None:
    good = lora_with(1.5, torch.float32)
    good = {name: t.to(dtype) for name, t in good.items()}
    validate_lora_file(save(good, tmp_path / "good.safetensors"), LIMIT)

    bad = {name: t.clone() for name, t in good.items()}
    bad[UP].view(torch.uint8)[3, 1] = 0x7F  # NaN in both formats (E5M2: also an exponent of all ones)
    with pytest.raises(InvalidLoraFile, match="non_finite"):
        validate_lora_file(save(bad, tmp_path / "bad.safetensors"), LIMIT)


def test_a_nan_in_the_last_element_of_a_tensor_spanning_several_chunks_is_found(tmp_path: Path) -> None:
    size = 3_000_000  # 12 MB of float32: three scan chunks
    tensors = lora_with(0.25, torch.float32, size=size, at=size - 1)
    tensors[UP][-1, -1] = math.nan
    path = save(tensors, tmp_path / "big.safetensors")

    with pytest.raises(InvalidLoraFile, match="non_finite"):
        validate_lora_file(path, LIMIT)
    tensors[UP][-1, -1] = 1.0
    validate_lora_file(save(tensors, path), LIMIT)


def test_the_bit_test_agrees_with_numpy_on_every_float16_and_many_float32_values() -> None:
    every_half = np.arange(65536, dtype=np.uint16).view(np.float16)
    for value in every_half:
        single = np.array([value], dtype=np.float16)
        assert has_non_finite(single.tobytes(), "F16") == (not np.isfinite(value)), value
    rng = np.random.default_rng(0)
    edges = np.array([0x7F800000, 0xFF800000, 0x7FC00001, 0x7F7FFFFF, 0x00800000], np.uint32)
    words = np.concatenate([rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32), edges])
    for word in words:
        single = np.array([word], dtype=np.uint32).view(np.float32)
        assert has_non_finite(single.tobytes(), "F32") == (not np.isfinite(single[0])), hex(word)
    assert not has_non_finite(np.full(8, 0x7FF0, np.int16).tobytes(), "I16"), "integers are always finite"


def test_numpy_written_files_are_checked(tmp_path: Path) -> None:
    up = np.linspace(-1, 1, 64, dtype=np.float32).reshape(16, 4)
    up[7, 2] = np.inf
    data = save_numpy({DOWN: np.ones((4, 8), np.float32), UP: up})
    with pytest.raises(InvalidLoraFile, match="non_finite"):
        validate_lora_file(data, LIMIT)


def test_more_tensors_than_any_sd15_lora_holds_are_refused(tmp_path: Path) -> None:
    layers = (MAX_TENSORS // 2) + 1
    tensors = {}
    for n in range(layers):
        base = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_{n}_attn1_to_q"
        tensors[f"{base}.lora_down.weight"] = torch.zeros(1, 2)
        tensors[f"{base}.lora_up.weight"] = torch.zeros(2, 1)
    path = save(tensors, tmp_path / "many.safetensors")

    with pytest.raises(InvalidLoraFile) as caught:
        validate_lora_file(path, LIMIT)
    assert caught.value.code is LoraFileError.TOO_MANY_TENSORS
    assert caught.value.path == path


def test_tensors_of_more_than_four_dimensions_are_refused(tmp_path: Path) -> None:
    tensors = {DOWN: torch.zeros(1, 1, 1, 1, 2, 2), UP: torch.zeros(2, 2)}
    with pytest.raises(InvalidLoraFile, match="6 dimensions"):
        validate_lora_file(save(tensors, tmp_path / "deep.safetensors"), LIMIT)


def test_the_total_size_limit_counts_every_tensor(tmp_path: Path) -> None:
    path = save(lora_with(0.5, torch.float32, size=40_000), tmp_path / "lora.safetensors")
    tensor_bytes = 40_000 * 4 + 32 * 4
    with pytest.raises(InvalidLoraFile, match="too_large"):
        validate_lora_file(path, tensor_bytes)  # the header comes on top
    validate_lora_file(path, path.stat().st_size)


# ---------------------------------------------------------------------------- the worker's load paths
@pytest.fixture
def nan_face_lora(loras: dict[str, Path], tmp_path: Path) -> Path:
    """The ``loras`` fixture's first face LoRA with one weight turned NaN."""
    from safetensors.torch import load_file

    tensors = load_file(str(loras["face1"]))
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = math.nan
    return save(tensors, tmp_path / "nan_face.safetensors")


def test_both_readers_of_a_face_lora_refuse_nan_weights(tiny_pipe: object, nan_face_lora: Path) -> None:
    for read in (read_lora_layers, read_lora):
        with pytest.raises(InvalidLoraFile) as caught:
            read(tiny_pipe, nan_face_lora)  # type: ignore[operator]
        assert caught.value.code is LoraFileError.NON_FINITE and caught.value.path == nan_face_lora


def test_a_nan_alpha_in_the_metadata_is_refused(tiny_pipe: object, loras: dict[str, Path]) -> None:
    from pipeline.lora_merge import layers_from_state_dict

    state, alphas, _ = read_lora(tiny_pipe, loras["face1"])  # type: ignore[arg-type]
    with pytest.raises(InvalidLoraFile, match="non_finite"):
        layers_from_state_dict(state, alphas, {"lora_alpha": math.nan})


@pytest.mark.parametrize("merge", ["direct", "peft"])
def test_generation_with_a_nan_face_lora_stops_before_denoising_and_leaves_the_pipeline_clean(
    tiny_pipe: object, tiny_env: object, loras: dict[str, Path], nan_face_lora: Path, merge: str
) -> None:
    generator = PortraitGenerator(tiny_pipe, tiny_env)  # type: ignore[arg-type]
    generator.merge = merge
    with pytest.raises(InvalidLoraFile):
        generate_with(generator, {**loras, "face1": nan_face_lora})
    assert not has_lora_layers(generator.pipe) and not generator.fuser.fused


def test_the_user_hears_whose_lora_is_damaged(
    tiny_model_dir: Path, tmp_path: Path, loras: dict[str, Path], nan_face_lora: Path
) -> None:
    settings = tiny_settings(tiny_model_dir, tmp_path, queues=["generate"], rank_faces=False, nsfw_check=False)
    runner = PipelineRunner(settings, LocalBlobStore(settings.blob_dir))
    runner.blobs.put_file("runs/t-nan-0001/face_lora.safetensors", nan_face_lora)
    runner.blobs.put_file("runs/t-good-0001/face_lora.safetensors", loras["face1"])
    runner.blobs.put_file("communities/1/styles/nan.safetensors", nan_face_lora)

    def request(face_run: str, style_lora: str | None) -> jobs.GenerateRequest:
        return jobs.GenerateRequest(
            run_id="g-nan-000001", user_id=1, model_id=1, lora_key=f"runs/{face_run}/face_lora.safetensors",
            template_key=None, trigger="<fcsks>, a handsome man",
            style=jobs.StyleSpec(name="noir", prompt="noir", lora=style_lora), count=1, candidates=1,
        )  # fmt: skip

    from tests.pipeline.test_runner import _control

    face = runner.generate(request("t-nan-0001", None), _control())
    style = runner.generate(request("t-good-0001", "communities/1/styles/nan.safetensors"), _control())

    assert face.error is jobs.ErrorCode.FACE_MODEL_DAMAGED and "NaN" in (face.message or "")
    assert style.error is jobs.ErrorCode.STYLE_DAMAGED
    assert not face.portraits and not style.portraits
